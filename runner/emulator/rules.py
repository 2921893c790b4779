"""fal's input rules for the six Luma endpoints, as one compact table.

This is the emulator's own reading of luma.md (§2b, §3a, §4 and its validator
checklist), written apart from the runner's endpoint models on purpose: when the two
disagree a test fails, instead of two copies of one mistake agreeing with each other.
Violations come back in fal's 422 shape, ``{"detail": [{"loc": ["body", field],
"msg": ..., "type": ...}]}``, with pydantic's wording. Endpoints not in the table accept
any JSON object, like fal's open schemas accept unknown fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Detail = dict[str, Any]
Args = Mapping[str, Any]
#: Checks one present, non-null value: None when fine, else pydantic's (type, msg).
Check = Callable[[Any], tuple[str, str] | None]

#: A prompt containing this word is refused by the emulated content moderation.
MODERATION_WORD = "FORBIDDEN_CONTENT"
_MODERATION_MSG = "The content could not be processed because it was flagged by content moderation."


def _text(low: int, high: int | None = None) -> Check:
    def check(value: Any) -> tuple[str, str] | None:
        if not isinstance(value, str):
            return "string_type", "Input should be a valid string"
        if len(value) < low:
            return "string_too_short", f"String should have at least {low} character"
        if high is not None and len(value) > high:
            return "string_too_long", f"String should have at most {high} characters"
        return None

    return check


def _choice(*options: str) -> Check:
    listed = ", ".join(f"'{o}'" for o in options[:-1])
    wanted = f"{listed} or '{options[-1]}'" if listed else f"'{options[-1]}'"

    def check(value: Any) -> tuple[str, str] | None:
        return None if value in options else ("literal_error", f"Input should be {wanted}")

    return check


def _boolean(value: Any) -> tuple[str, str] | None:
    return None if isinstance(value, bool) else ("bool_type", "Input should be a valid boolean")


def _rectangle(value: Any) -> tuple[str, str] | None:
    keys = ("x_norm", "y_norm", "w_norm", "h_norm")
    if not isinstance(value, dict) or any(k not in value for k in keys):
        return "value_error", "Value error, source_position needs x_norm, y_norm, w_norm and h_norm"
    x, y, w, h = (value[k] for k in keys)
    if not all(isinstance(n, int | float) and not isinstance(n, bool) for n in (x, y, w, h)):
        return "float_type", "Input should be a valid number"
    eps = 1e-9  # so that 0.7 + 0.3 counts as fitting
    if not (x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 1 + eps and y + h <= 1 + eps):
        return "value_error", "Value error, source_position must lie inside the output canvas"
    return None


@dataclass(frozen=True)
class Field:
    """One input field: its check, whether it must be present, its default, null allowed."""

    check: Check
    required: bool = False
    default: Any = None
    nullable: bool = False


#: A rule across fields: (field blamed, broken? on the input with defaults, message).
Combo = tuple[str, Callable[[Args], Any], str]


@dataclass(frozen=True)
class Endpoint:
    """The rules of one endpoint and what fal bills it by."""

    fields: Mapping[str, Field]
    combos: tuple[Combo, ...] = ()
    unit: Literal["video_seconds", "images"] = "video_seconds"
    defaults: Mapping[str, Any] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaults", {n: f.default for n, f in self.fields.items()})


PROMPT = Field(_text(1, 6000), required=True)
URL = Field(_text(1), required=True)
OPTIONAL_URL = Field(_text(1), nullable=True)
RESOLUTION = Field(_choice("540p", "720p", "1080p"), default="540p")
FLAG = Field(_boolean, default=False)
VIDEO_ASPECT = ("9:16", "3:4", "1:1", "4:3", "16:9", "21:9")
IMAGE_ASPECT = ("3:1", "2:1", "16:9", "3:2", "4:3", "1:1", "3:4", "2:3", "9:16", "1:2", "1:3")
STRENGTHS = tuple(f"{mode}_{n}" for mode in ("adhere", "flex", "reimagine") for n in (1, 2, 3))
STYLE = Field(_choice("auto", "manga"), default="auto")
OUTPUT_FORMAT = Field(_choice("png", "jpeg"), default="png")

_HDR_RESOLUTION: Combo = (
    "hdr",
    lambda a: a["hdr"] and a["resolution"] not in ("720p", "1080p"),
    "HDR is only available at 720p or 1080p",
)
_EXR_NEEDS_HDR: Combo = (
    "exr_export",
    lambda a: a["exr_export"] and not a["hdr"],
    "exr_export requires hdr",
)

ENDPOINTS: dict[str, Endpoint] = {
    "luma/agent/ray/v3.2/video-to-video": Endpoint(
        {
            "prompt": PROMPT,
            "video_url": URL,
            "start_image_url": OPTIONAL_URL,
            "resolution": RESOLUTION,
            "duration": Field(_choice("5s", "10s"), default="5s"),
            "edit_strength": Field(_choice(*STRENGTHS), nullable=True),
            "auto_controls": FLAG,
            "hdr": FLAG,
            "exr_export": FLAG,
            "loop": FLAG,
        },
        (
            ("loop", lambda a: a["loop"], "loop is not supported for video edits"),
            (
                "edit_strength",
                lambda a: a["auto_controls"] and a["edit_strength"] is not None,
                "auto_controls=true cannot be combined with edit_strength",
            ),
            (
                "controls",
                lambda a: a["auto_controls"] and a.get("controls") is not None,
                "auto_controls=true cannot be combined with controls",
            ),
            _HDR_RESOLUTION,
            _EXR_NEEDS_HDR,
        ),
    ),
    "luma/agent/ray/v3.2/text-to-video": Endpoint(
        {
            "prompt": PROMPT,
            "aspect_ratio": Field(_choice(*VIDEO_ASPECT), default="16:9"),
            "resolution": RESOLUTION,
            "duration": Field(_choice("5s", "10s"), default="5s"),
            "end_image_url": OPTIONAL_URL,
            "loop": FLAG,
            "hdr": FLAG,
            "exr_export": FLAG,
        },
        (
            (
                "loop",
                lambda a: a["loop"] and (a["duration"] != "5s" or a["hdr"] or a["end_image_url"]),
                "loop is only available for 5s SDR videos without an end frame",
            ),
            ("hdr", lambda a: a["hdr"] and a["duration"] == "10s", "HDR is not supported with 10s"),
            _HDR_RESOLUTION,
            _EXR_NEEDS_HDR,
        ),
    ),
    "luma/agent/ray/v3.2/image-to-video": Endpoint(
        {
            "prompt": PROMPT,
            "image_url": URL,
            "end_image_url": OPTIONAL_URL,
            "resolution": RESOLUTION,
            "duration": Field(_choice("5s"), default="5s"),
            "loop": FLAG,
            "hdr": FLAG,
            "exr_export": FLAG,
        },
        (
            (
                "loop",
                lambda a: a["loop"] and (a["end_image_url"] or a["hdr"]),
                "loop cannot be combined with end_image_url or hdr",
            ),
            _HDR_RESOLUTION,
            _EXR_NEEDS_HDR,
        ),
    ),
    "luma/agent/ray/v3.2/reframe": Endpoint(
        {
            "prompt": PROMPT,
            "video_url": URL,
            "aspect_ratio": Field(_choice(*VIDEO_ASPECT), required=True),
            "resolution": RESOLUTION,
            "duration": Field(_choice("5s", "10s"), nullable=True),
            "source_position": Field(_rectangle, nullable=True),
            "hdr": FLAG,
            "exr_export": FLAG,
        },
        (
            ("hdr", lambda a: a["hdr"], "HDR is not supported for reframe"),
            ("exr_export", lambda a: a["exr_export"], "EXR export is not supported for reframe"),
            (
                "resolution",
                lambda a: a["resolution"] == "1080p" and a["aspect_ratio"] in ("9:16", "3:4"),
                "1080p is not available for vertical aspect ratios (9:16, 3:4)",
            ),
        ),
    ),
    "luma/agent/uni-1/v1/text-to-image": Endpoint(
        {
            "prompt": PROMPT,
            "aspect_ratio": Field(_choice(*IMAGE_ASPECT), default="1:1"),
            "style": STYLE,
            "output_format": OUTPUT_FORMAT,
        },
        unit="images",
    ),
    "luma/agent/uni-1/v1/edit": Endpoint(
        {"prompt": PROMPT, "image_url": URL, "style": STYLE, "output_format": OUTPUT_FORMAT},
        unit="images",
    ),
}


def detail(field: str | None, kind: str, msg: str) -> Detail:
    """One entry of a 422 ``detail`` list, located in the request body."""
    return {"loc": ["body", field] if field else ["body"], "msg": msg, "type": kind}


def check(endpoint: str, arguments: Any) -> list[Detail]:
    """fal's 422 details for this input: empty when the input is acceptable."""
    if not isinstance(arguments, dict):
        return [detail(None, "dict_type", "Input should be a valid dictionary")]
    rules = ENDPOINTS.get(endpoint)
    if rules is None:
        return []
    errors: list[Detail] = []
    for name, spec in rules.fields.items():
        value = arguments.get(name)
        if name not in arguments:
            problem = ("missing", "Field required") if spec.required else None
        elif value is None and spec.nullable:
            problem = None
        else:
            problem = spec.check(value)
        if problem:
            errors.append(detail(name, *problem))
    if errors:  # like pydantic, cross-field rules only run on well-typed input
        return errors
    view = {**rules.defaults, **arguments}
    return [
        detail(name, "value_error", f"Value error, {msg}")
        for name, broken, msg in rules.combos
        if broken(view)
    ]


def moderation_detail() -> Detail:
    """The 422 entry of a prompt refused by content moderation."""
    return detail("prompt", "content_policy_violation", _MODERATION_MSG)


def moderate(arguments: Any) -> list[Detail]:
    """Content moderation: a prompt containing :data:`MODERATION_WORD` is refused."""
    prompt = arguments.get("prompt") if isinstance(arguments, dict) else None
    return [moderation_detail()] if isinstance(prompt, str) and MODERATION_WORD in prompt else []


def billable_units(endpoint: str, arguments: Mapping[str, Any], output: Mapping[str, Any]) -> str:
    """``x-fal-billable-units``: seconds of output video, or images, or 1 for other endpoints."""
    rules = ENDPOINTS.get(endpoint)
    if rules is None:
        return "1"
    if rules.unit == "images":
        images = output.get("images")
        return str(len(images) if isinstance(images, list) else 1)
    duration = arguments.get("duration")
    if isinstance(duration, str) and duration.endswith("s"):
        return duration.removesuffix("s")
    video = output.get("video")
    seconds = video.get("duration") if isinstance(video, dict) else None
    # Reframe without a duration follows its source: fal bills each started second.
    return str(math.ceil(seconds) if isinstance(seconds, int | float) else 5)
