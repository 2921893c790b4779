"""fal endpoints as job kinds: input/output models, rules, limits and prices.

The six Luma endpoints raybatch knows are validated locally (``ENDPOINTS``); any other
fal id is passed through as written when the manifest says ``passthrough: true``. Prices,
limits and rules are cited data (``PRICES``, ``LIMITS``, ``RULES``: each row names its
source and date); a user's rows override them (``Overrides``, ``EndpointTables``), and
``endpoint_rows``/``format_endpoints`` make ``raybatch endpoints``. The public names are
re-exported here.
"""

from __future__ import annotations

from runner.endpoints._base import Media, Ruled, Strict, Violation, unavailable
from runner.endpoints._cite import Cite, user_cite
from runner.endpoints._issues import Issue, Loc, did_you_mean, format_loc, issues_from
from runner.endpoints._limits import LIMITS, AppliedLimit, Limit, LimitOverrides, limits_for
from runner.endpoints._luma import (
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
from runner.endpoints._overrides import EndpointTables, Overrides
from runner.endpoints._prices import (
    DEFAULT_PRICES,
    PRICES,
    Price,
    PriceOverride,
    PriceTable,
    estimate_cost,
    unpriced_refusal,
)
from runner.endpoints._registry import (
    EDIT_IMAGE,
    ENDPOINTS,
    IMAGE_TO_VIDEO,
    REFRAME,
    TEXT_TO_IMAGE,
    TEXT_TO_VIDEO,
    VIDEO_TO_VIDEO,
    EndpointSpec,
    MediaField,
    endpoint_problem,
    is_endpoint_id,
    spec_for,
)
from runner.endpoints._rules import RULES, Rule, rules_for
from runner.endpoints._table import EndpointRow, endpoint_rows, format_endpoints, rows_as_json

__all__ = (
    "DEFAULT_PRICES",
    "EDIT_IMAGE",
    "ENDPOINTS",
    "IMAGE_TO_VIDEO",
    "LIMITS",
    "PRICES",
    "REFRAME",
    "RULES",
    "TEXT_TO_IMAGE",
    "TEXT_TO_VIDEO",
    "VIDEO_TO_VIDEO",
    "AppliedLimit",
    "Cite",
    "EditImageInput",
    "EndpointRow",
    "EndpointSpec",
    "EndpointTables",
    "File",
    "ImageOutput",
    "ImageToVideoInput",
    "Issue",
    "Limit",
    "LimitOverrides",
    "Loc",
    "Media",
    "MediaField",
    "Overrides",
    "Price",
    "PriceOverride",
    "PriceTable",
    "ReframeInput",
    "Rule",
    "Ruled",
    "Strict",
    "TextToImageInput",
    "TextToVideoInput",
    "VideoOutput",
    "VideoToVideoInput",
    "Violation",
    "did_you_mean",
    "endpoint_problem",
    "endpoint_rows",
    "estimate_cost",
    "format_endpoints",
    "format_loc",
    "is_endpoint_id",
    "issues_from",
    "limits_for",
    "rows_as_json",
    "rules_for",
    "spec_for",
    "unavailable",
    "unpriced_refusal",
    "user_cite",
)
