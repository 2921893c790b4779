"""fal endpoints as job kinds: input/output models, rules, limits and prices.

The six Luma endpoints raybatch knows are validated locally (``ENDPOINTS``); any other
fal id is passed through as written. The public names are re-exported here.
"""

from runner.endpoints.base import Media, Ruled, Strict, unavailable
from runner.endpoints.issues import Issue, did_you_mean, format_loc, issues_from
from runner.endpoints.limits import LIMITS, AppliedLimit, Limit, LimitOverrides, limits_for
from runner.endpoints.luma import (
    EditImageInput,
    File,
    ImageOutput,
    ImageToVideoInput,
    ReframeInput,
    TextToImageInput,
    TextToVideoInput,
    VideoOutput,
    VideoToVideoInput,
)
from runner.endpoints.prices import (
    DEFAULT_PRICES,
    PRICES,
    Price,
    PriceOverride,
    PriceTable,
    estimate_cost,
)
from runner.endpoints.registry import (
    EDIT_IMAGE,
    ENDPOINTS,
    IMAGE_TO_VIDEO,
    REFRAME,
    TEXT_TO_IMAGE,
    TEXT_TO_VIDEO,
    VIDEO_TO_VIDEO,
    EndpointSpec,
    is_endpoint_id,
    spec_for,
)

__all__ = [
    "DEFAULT_PRICES",
    "EDIT_IMAGE",
    "ENDPOINTS",
    "IMAGE_TO_VIDEO",
    "LIMITS",
    "PRICES",
    "REFRAME",
    "TEXT_TO_IMAGE",
    "TEXT_TO_VIDEO",
    "VIDEO_TO_VIDEO",
    "AppliedLimit",
    "EditImageInput",
    "EndpointSpec",
    "File",
    "ImageOutput",
    "ImageToVideoInput",
    "Issue",
    "Limit",
    "LimitOverrides",
    "Media",
    "Price",
    "PriceOverride",
    "PriceTable",
    "ReframeInput",
    "Ruled",
    "Strict",
    "TextToImageInput",
    "TextToVideoInput",
    "VideoOutput",
    "VideoToVideoInput",
    "did_you_mean",
    "estimate_cost",
    "format_loc",
    "is_endpoint_id",
    "issues_from",
    "limits_for",
    "spec_for",
    "unavailable",
]
