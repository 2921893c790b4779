"""The emulator's own table of fal's Luma input rules (luma.md §2b, §3a, §4, checklist)."""

from __future__ import annotations

from typing import Any

import pytest

from runner.emulator.rules import billable_units, check, moderate

V2V = "luma/agent/ray/v3.2/video-to-video"
T2V = "luma/agent/ray/v3.2/text-to-video"
I2V = "luma/agent/ray/v3.2/image-to-video"
REFRAME = "luma/agent/ray/v3.2/reframe"
T2I = "luma/agent/uni-1/v1/text-to-image"
EDIT = "luma/agent/uni-1/v1/edit"

VIDEO = "https://cdn/clip.mp4"
IMAGE = "https://cdn/frame.png"
BASE: dict[str, dict[str, Any]] = {
    V2V: {"prompt": "p", "video_url": VIDEO},
    T2V: {"prompt": "p"},
    I2V: {"prompt": "p", "image_url": IMAGE},
    REFRAME: {"prompt": "p", "video_url": VIDEO, "aspect_ratio": "9:16"},
    T2I: {"prompt": "p"},
    EDIT: {"prompt": "p", "image_url": IMAGE},
}
BOX = {"x_norm": 0.1, "y_norm": 0.2, "w_norm": 0.5, "h_norm": 0.8}


@pytest.mark.parametrize(
    ("endpoint", "extra"),
    [
        (V2V, {"resolution": "1080p", "duration": "10s", "hdr": True, "exr_export": True}),
        (V2V, {"edit_strength": "reimagine_3", "start_image_url": IMAGE, "controls": {"pose": {}}}),
        (V2V, {"auto_controls": True, "edit_strength": None, "unknown_field": 1}),
        (T2V, {"aspect_ratio": "21:9", "loop": True}),
        (T2V, {"resolution": "720p", "hdr": True, "exr_export": True}),
        (I2V, {"end_image_url": IMAGE, "resolution": "1080p", "hdr": True}),
        (I2V, {"loop": True}),
        (REFRAME, {"aspect_ratio": "16:9", "resolution": "1080p", "source_position": BOX}),
        (REFRAME, {"source_position": {"x_norm": 0.7, "y_norm": 0, "w_norm": 0.3, "h_norm": 1}}),
        (T2I, {"aspect_ratio": "1:3", "style": "manga", "output_format": "jpeg"}),
        (EDIT, {"style": "auto", "output_format": "png"}),
        ("fal-ai/anything", {}),
    ],
)
def test_valid_inputs_pass(endpoint: str, extra: dict[str, Any]) -> None:
    """Inputs within the rules (and any input to an unknown endpoint) raise nothing."""
    assert check(endpoint, {**BASE.get(endpoint, {}), **extra}) == []


@pytest.mark.parametrize(
    ("endpoint", "extra", "field", "kind"),
    [
        (T2V, {"prompt": ""}, "prompt", "string_too_short"),
        (T2I, {"prompt": 5}, "prompt", "string_type"),
        (EDIT, {"prompt": None}, "prompt", "string_type"),
        (V2V, {"video_url": ""}, "video_url", "string_too_short"),
        (V2V, {"resolution": "4k"}, "resolution", "literal_error"),
        (V2V, {"resolution": None}, "resolution", "literal_error"),
        (V2V, {"duration": "7s"}, "duration", "literal_error"),
        (V2V, {"edit_strength": "adhere_4"}, "edit_strength", "literal_error"),
        (V2V, {"auto_controls": True, "edit_strength": "flex_1"}, "edit_strength", "value_error"),
        (V2V, {"auto_controls": True, "controls": {}}, "controls", "value_error"),
        (V2V, {"hdr": True}, "hdr", "value_error"),
        (V2V, {"resolution": "720p", "exr_export": True}, "exr_export", "value_error"),
        (V2V, {"loop": True}, "loop", "value_error"),
        (V2V, {"hdr": "yes"}, "hdr", "bool_type"),
        (T2V, {"aspect_ratio": "2:1"}, "aspect_ratio", "literal_error"),
        (T2V, {"loop": True, "duration": "10s"}, "loop", "value_error"),
        (T2V, {"loop": True, "end_image_url": IMAGE}, "loop", "value_error"),
        (T2V, {"resolution": "1080p", "hdr": True, "duration": "10s"}, "hdr", "value_error"),
        (I2V, {"image_url": None}, "image_url", "string_type"),
        (I2V, {"duration": "10s"}, "duration", "literal_error"),
        (I2V, {"loop": True, "end_image_url": IMAGE}, "loop", "value_error"),
        (I2V, {"exr_export": True}, "exr_export", "value_error"),
        (REFRAME, {"aspect_ratio": "5:4"}, "aspect_ratio", "literal_error"),
        (REFRAME, {"resolution": "1080p", "aspect_ratio": "3:4"}, "resolution", "value_error"),
        (REFRAME, {"hdr": True}, "hdr", "value_error"),
        (REFRAME, {"exr_export": True}, "exr_export", "value_error"),
        (
            REFRAME,
            {"source_position": {"x_norm": 0, "y_norm": 0, "w_norm": 1}},
            "source_position",
            "value_error",
        ),
        (REFRAME, {"source_position": {**BOX, "x_norm": 0.6}}, "source_position", "value_error"),
        (REFRAME, {"source_position": {**BOX, "w_norm": 0}}, "source_position", "value_error"),
        (REFRAME, {"source_position": {**BOX, "y_norm": -0.1}}, "source_position", "value_error"),
        (REFRAME, {"source_position": {**BOX, "h_norm": "1"}}, "source_position", "float_type"),
        (T2I, {"aspect_ratio": "21:9"}, "aspect_ratio", "literal_error"),
        (T2I, {"style": "anime"}, "style", "literal_error"),
        (EDIT, {"output_format": "webp"}, "output_format", "literal_error"),
    ],
)
def test_rule_violations(endpoint: str, extra: dict[str, Any], field: str, kind: str) -> None:
    """Each broken rule gives one pydantic-style detail located at its field."""
    [detail] = check(endpoint, {**BASE[endpoint], **extra})
    assert detail["loc"] == ["body", field] and detail["type"] == kind and detail["msg"]


@pytest.mark.parametrize(
    ("endpoint", "field"), [(V2V, "video_url"), (REFRAME, "aspect_ratio"), (EDIT, "image_url")]
)
def test_required_fields(endpoint: str, field: str) -> None:
    """Missing required fields (and the prompt, on every endpoint) are ``missing``."""
    arguments = {k: v for k, v in BASE[endpoint].items() if k not in (field, "prompt")}
    assert {(d["loc"][1], d["type"]) for d in check(endpoint, arguments)} == {
        (field, "missing"),
        ("prompt", "missing"),
    }


def test_input_must_be_an_object() -> None:
    """A JSON body that is not an object is refused on every endpoint."""
    assert check("fal-ai/anything", [1, 2])[0]["type"] == "dict_type"


def test_moderation_word() -> None:
    """Only prompts containing FORBIDDEN_CONTENT are moderated."""
    assert moderate({"prompt": "FORBIDDEN_CONTENT here"})[0]["type"] == "content_policy_violation"
    assert moderate({"prompt": "fine"}) == moderate([]) == []


def test_billable_units() -> None:
    """Video bills seconds of output, images count images, other endpoints bill 1."""
    assert billable_units(V2V, {"duration": "10s"}, {}) == "10"
    assert billable_units(T2V, {}, {}) == "5"
    assert billable_units(REFRAME, {}, {"video": {"duration": 7.2}}) == "8"
    assert billable_units(T2I, {}, {"images": [{}, {}]}) == "2"
    assert billable_units("fal-ai/x", {}, {}) == "1"
