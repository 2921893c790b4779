"""The six Luma endpoint models, and the rules, limits and price tables, case by case."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from runner.endpoints import (
    DEFAULT_PRICES,
    EDIT_IMAGE,
    ENDPOINTS,
    IMAGE_TO_VIDEO,
    LIMITS,
    PRICES,
    REFRAME,
    RULES,
    TEXT_TO_IMAGE,
    TEXT_TO_VIDEO,
    VIDEO_TO_VIDEO,
    Cite,
    EndpointRow,
    EndpointTables,
    ImageOutput,
    LimitOverrides,
    Overrides,
    PriceOverride,
    VideoOutput,
    endpoint_problem,
    endpoint_rows,
    estimate_cost,
    format_endpoints,
    is_endpoint_id,
    limits_for,
    rows_as_json,
    spec_for,
    unpriced_refusal,
    user_cite,
)
from runner.media import MediaInfo

URL = "https://example.com/a.mp4"
IMG = "https://example.com/a.png"
PLACEHOLDER = "@local:" + "ab" * 32
DROP = object()  # a change that removes the field

VALID: dict[str, dict[str, Any]] = {
    VIDEO_TO_VIDEO: {"prompt": "noir", "video_url": URL},
    TEXT_TO_VIDEO: {"prompt": "a herd of horses"},
    IMAGE_TO_VIDEO: {"prompt": "she turns", "image_url": IMG},
    REFRAME: {"prompt": "extend the sky", "video_url": URL, "aspect_ratio": "9:16"},
    TEXT_TO_IMAGE: {"prompt": "a samurai"},
    EDIT_IMAGE: {"prompt": "make it dusk", "image_url": IMG},
}

KEYFRAMES_2 = {"keyframes": [IMG, IMG], "keyframe_indexes": [0, 100]}
I2V_KEYFRAMES = {"image_url": DROP, **KEYFRAMES_2}

# (endpoint, changes to the valid input, field the issue names, phrase of its message, the
# RULES row it breaks or None for a field's own type/choice check). Every (rule, endpoint)
# pair of RULES has a case here: test_every_rule_row_is_broken_by_a_case checks it.
Case = tuple[str, dict[str, Any], str, str, str | None]
VIOLATIONS: list[Case] = [
    (VIDEO_TO_VIDEO, {"prompt": ""}, "prompt", "at least 1 character", "prompt-length"),
    (VIDEO_TO_VIDEO, {"prompt": "x" * 6001}, "prompt", "at most 6000 characters", "prompt-length"),
    (TEXT_TO_VIDEO, {"prompt": "x" * 6001}, "prompt", "at most 6000", "prompt-length"),
    (IMAGE_TO_VIDEO, {"prompt": ""}, "prompt", "at least 1 character", "prompt-length"),
    (REFRAME, {"prompt": "x" * 6001}, "prompt", "at most 6000", "prompt-length"),
    (TEXT_TO_IMAGE, {"prompt": ""}, "prompt", "at least 1 character", "prompt-length"),
    (EDIT_IMAGE, {"prompt": "x" * 6001}, "prompt", "at most 6000", "prompt-length"),
    (VIDEO_TO_VIDEO, {"video_url": DROP}, "video_url", "required", None),
    (VIDEO_TO_VIDEO, {"video_url": "file:///tmp/a.mp4"}, "video_url", "file:// URLs are not", None),
    (VIDEO_TO_VIDEO, {"video_url": "media/a.mp4"}, "video_url", "must be an http(s) URL", None),
    (VIDEO_TO_VIDEO, {"resolution": "480p"}, "resolution", "'480p' is not one of 540p, 720p", None),
    (VIDEO_TO_VIDEO, {"duration": "15s"}, "duration", "is not one of 5s, 10s", None),
    (VIDEO_TO_VIDEO, {"edit_strength": "strong"}, "edit_strength", "not one of adhere_1", None),
    (
        VIDEO_TO_VIDEO,
        {"hdr": True},
        "hdr",
        "HDR needs resolution 720p or 1080p (got 540p)",
        "hdr-resolution",
    ),
    (
        VIDEO_TO_VIDEO,
        {"exr_export": True},
        "exr_export",
        "EXR export needs hdr: true",
        "exr-needs-hdr",
    ),
    (
        VIDEO_TO_VIDEO,
        {"auto_controls": True, "edit_strength": "flex_1"},
        "auto_controls",
        "cannot be combined with edit_strength",
        "v2v-auto-controls-strength",
    ),
    (
        VIDEO_TO_VIDEO,
        {"auto_controls": True, "controls": {"face": {"enabled": True}}},
        "auto_controls",
        "cannot be combined with controls",
        "v2v-auto-controls-controls",
    ),
    (
        VIDEO_TO_VIDEO,
        {"controls": {"depth": {"blur": 1.5}}},
        "controls.depth.blur",
        "less than",
        None,
    ),
    (
        VIDEO_TO_VIDEO,
        {"controls": {"pose": {"strength": "loose"}}},
        "controls.pose.strength",
        "not one of precise, coarse",
        None,
    ),
    (
        VIDEO_TO_VIDEO,
        {"controls": {"depth": {"blurr": 0.5}}},
        "controls.depth.blurr",
        "did you mean 'blur'?",
        None,
    ),
    (
        VIDEO_TO_VIDEO,
        {"keyframes": [IMG] * 65, "keyframe_indexes": list(range(65))},
        "keyframes",
        "at most 64",
        "keyframes-count",
    ),
    (
        VIDEO_TO_VIDEO,
        {"keyframes": [IMG, IMG], "keyframe_indexes": [0]},
        "keyframe_indexes",
        "one index per keyframe (2 keyframes, 1 indexes)",
        "keyframe-indexes-pair",
    ),
    (
        VIDEO_TO_VIDEO,
        {"keyframes": [IMG, IMG], "keyframe_indexes": [3, 3]},
        "keyframe_indexes",
        "must be unique",
        "keyframe-indexes-pair",
    ),
    (
        VIDEO_TO_VIDEO,
        {"keyframes": [IMG], "keyframe_indexes": [-1]},
        "keyframe_indexes[0]",
        "greater than or equal to 0",
        None,
    ),
    (
        VIDEO_TO_VIDEO,
        {"keyframes": [IMG], "keyframe_indexes": [0], "start_image_url": IMG},
        "keyframes",
        "cannot be used together",
        "v2v-keyframes-start-image",
    ),
    (
        VIDEO_TO_VIDEO,
        {"loop": True},
        "loop",
        "loop is not available for video-to-video edits",
        "v2v-no-loop",
    ),
    (
        VIDEO_TO_VIDEO,
        {"aspect_ratio": "1:1"},
        "aspect_ratio",
        "keeps the source's aspect ratio",
        "v2v-no-aspect",
    ),
    (
        VIDEO_TO_VIDEO,
        {"end_image_url": IMG},
        "end_image_url",
        "end frame is not available",
        "v2v-no-end-frame",
    ),
    (VIDEO_TO_VIDEO, {"resolutoin": "720p"}, "resolutoin", "did you mean 'resolution'?", None),
    (TEXT_TO_VIDEO, {"aspect_ratio": "2:1"}, "aspect_ratio", "'2:1' is not one of 9:16, 3:4", None),
    (
        TEXT_TO_VIDEO,
        {"loop": True, "duration": "10s"},
        "loop",
        "a loop can only be 5s long",
        "loop-5s",
    ),
    (
        TEXT_TO_VIDEO,
        {"loop": True, "hdr": True, "resolution": "720p"},
        "loop",
        "a loop cannot be HDR",
        "loop-sdr",
    ),
    (
        TEXT_TO_VIDEO,
        {"hdr": True, "resolution": "1080p", "duration": "10s"},
        "hdr",
        "HDR is only available for 5s clips",
        "t2v-hdr-5s",
    ),
    (TEXT_TO_VIDEO, {"hdr": True}, "hdr", "HDR needs resolution 720p or 1080p", "hdr-resolution"),
    (TEXT_TO_VIDEO, {"exr_export": True}, "exr_export", "needs hdr", "exr-needs-hdr"),
    (
        TEXT_TO_VIDEO,
        {"reference_image_urls": ["ftp://host/a.png"]},
        "reference_image_urls[0]",
        "scheme ftp:// is not accepted",
        None,
    ),
    (TEXT_TO_VIDEO, {"image_url": IMG}, "image_url", "unknown field 'image_url'", None),
    (
        IMAGE_TO_VIDEO,
        {"image_url": DROP},
        "image_url",
        "a start frame (image_url) or keyframes",
        "i2v-anchor",
    ),
    (
        IMAGE_TO_VIDEO,
        {"duration": "10s"},
        "duration",
        "makes 5s clips only (got 10s); 10s needs keyframes",
        "i2v-10s-keyframes",
    ),
    (
        IMAGE_TO_VIDEO,
        {"loop": True, "end_image_url": IMG},
        "loop",
        "a loop cannot have an end frame",
        "i2v-loop-end-frame",
    ),
    (
        IMAGE_TO_VIDEO,
        {"loop": True, "hdr": True, "resolution": "720p"},
        "loop",
        "a loop cannot be HDR",
        "loop-sdr",
    ),
    (
        IMAGE_TO_VIDEO,
        {**I2V_KEYFRAMES, "loop": True, "duration": "10s"},
        "loop",
        "a loop can only be 5s long",
        "loop-5s",
    ),
    (IMAGE_TO_VIDEO, {"aspect_ratio": "5:4"}, "aspect_ratio", "'5:4' is not one of", None),
    (IMAGE_TO_VIDEO, {"hdr": True}, "hdr", "HDR needs resolution 720p or 1080p", "hdr-resolution"),
    (IMAGE_TO_VIDEO, {"exr_export": True}, "exr_export", "needs hdr", "exr-needs-hdr"),
    (
        IMAGE_TO_VIDEO,
        KEYFRAMES_2,
        "keyframes",
        "cannot be combined with image_url or end_image_url",
        "i2v-keyframes-alone",
    ),
    (
        IMAGE_TO_VIDEO,
        {**I2V_KEYFRAMES, "end_image_url": IMG},
        "keyframes",
        "cannot be combined with image_url or end_image_url",
        "i2v-keyframes-alone",
    ),
    (
        IMAGE_TO_VIDEO,
        {**I2V_KEYFRAMES, "loop": True},
        "loop",
        "a loop cannot use keyframes",
        "i2v-keyframes-loop",
    ),
    (
        IMAGE_TO_VIDEO,
        {"image_url": DROP, "keyframes": [IMG], "keyframe_indexes": [121]},
        "keyframe_indexes",
        "at most 120 for this duration (got 121)",
        "i2v-keyframe-frames",
    ),
    (
        IMAGE_TO_VIDEO,
        {"image_url": DROP, "keyframes": [IMG] * 65, "keyframe_indexes": list(range(65))},
        "keyframes",
        "at most 64",
        "keyframes-count",
    ),
    (
        IMAGE_TO_VIDEO,
        {"image_url": DROP, "keyframes": [], "keyframe_indexes": []},
        "keyframes",
        "at least 1",
        "keyframes-count",
    ),
    (
        IMAGE_TO_VIDEO,
        {"image_url": DROP, "keyframes": [IMG, IMG], "keyframe_indexes": [7, 7]},
        "keyframe_indexes",
        "must be unique",
        "keyframe-indexes-pair",
    ),
    (
        IMAGE_TO_VIDEO,
        {"keyframe_indexes": [0]},
        "keyframe_indexes",
        "one index per keyframe (0 keyframes, 1 indexes)",
        "keyframe-indexes-pair",
    ),
    (REFRAME, {"aspect_ratio": DROP}, "aspect_ratio", "required", None),
    (REFRAME, {"aspect_ratio": "2:1"}, "aspect_ratio", "is not one of", None),
    (
        REFRAME,
        {"resolution": "1080p"},
        "resolution",
        "1080p is not available for 9:16 reframes",
        "reframe-1080p-vertical",
    ),
    (
        REFRAME,
        {"resolution": "1080p", "aspect_ratio": "3:4"},
        "resolution",
        "1080p is not available for 3:4 reframes",
        "reframe-1080p-vertical",
    ),
    (REFRAME, {"hdr": True}, "hdr", "HDR is not available for reframe", "reframe-no-hdr"),
    (
        REFRAME,
        {"exr_export": True},
        "exr_export",
        "EXR export is not available for reframe",
        "reframe-no-exr",
    ),
    (REFRAME, {"loop": True}, "loop", "loop is not available for reframe", "reframe-no-loop"),
    (
        REFRAME,
        {"duration": "5s"},
        "duration",
        "reframe has no duration: the output follows the source's length",
        "reframe-no-duration",
    ),
    (
        REFRAME,
        {"source_position": {"x_norm": 0, "y_norm": 0, "w_norm": 1}},
        "source_position.h_norm",
        "required",
        None,
    ),
    (
        REFRAME,
        {"source_position": {"x_norm": 0.5, "y_norm": 0, "w_norm": 0.6, "h_norm": 1}},
        "source_position.w_norm",
        "x_norm + w_norm must be at most 1 (got 1.1)",
        "reframe-source-inside",
    ),
    (
        REFRAME,
        {"source_position": {"x_norm": 0, "y_norm": 0.25, "w_norm": 1, "h_norm": 0.8}},
        "source_position.h_norm",
        "y_norm + h_norm must be at most 1",
        "reframe-source-inside",
    ),
    (
        REFRAME,
        {"source_position": {"x_norm": 0, "y_norm": 0, "w_norm": 0, "h_norm": 1}},
        "source_position.w_norm",
        "greater than 0",
        None,
    ),
    (
        REFRAME,
        {"source_position": {"x_norm": -0.1, "y_norm": 0, "w_norm": 0.5, "h_norm": 1}},
        "source_position.x_norm",
        "greater than or equal to 0",
        None,
    ),
    (TEXT_TO_IMAGE, {"aspect_ratio": "4:3"}, "aspect_ratio", "'4:3' is not one of 3:1", None),
    (TEXT_TO_IMAGE, {"aspect_ratio": "4:5"}, "aspect_ratio", "'4:5' is not one of 3:1", None),
    (TEXT_TO_IMAGE, {"style": "watercolor"}, "style", "not one of auto, manga", None),
    (TEXT_TO_IMAGE, {"output_format": "webp"}, "output_format", "not one of png, jpeg", None),
    (TEXT_TO_IMAGE, {"enable_web_search": "maybe"}, "enable_web_search", "valid boolean", None),
    (TEXT_TO_IMAGE, {"image_url": IMG}, "image_url", "unknown field", None),
    (EDIT_IMAGE, {"image_url": DROP}, "image_url", "required", None),
    (EDIT_IMAGE, {"reference_image_urls": IMG}, "reference_image_urls", "valid list", None),
    (EDIT_IMAGE, {"output_format": "gif"}, "output_format", "not one of png, jpeg", None),
    (EDIT_IMAGE, {"prompt": DROP}, "prompt", "required", None),
    (EDIT_IMAGE, {"aspect_ratio": "1:1"}, "aspect_ratio", "unknown field", None),
]


def _with(endpoint: str, changes: dict[str, Any]) -> dict[str, Any]:
    data = dict(VALID[endpoint])
    for name, value in changes.items():
        if value is DROP:
            data.pop(name, None)
        else:
            data[name] = value
    return data


@pytest.mark.parametrize("endpoint", list(VALID))
def test_valid_input_is_accepted(endpoint: str) -> None:
    """The minimal documented input of each endpoint validates, and keeps its values."""
    arguments, issues = spec_for(endpoint).validate(VALID[endpoint])
    assert issues == []
    assert arguments is not None
    assert {k: arguments[k] for k in VALID[endpoint]} == VALID[endpoint]


@pytest.mark.parametrize(
    ("endpoint", "changes", "field", "phrase", "rule"),
    VIOLATIONS,
    ids=[f"{e.rsplit('/', 1)[-1]}-{f}-{i}" for i, (e, _c, f, _p, _r) in enumerate(VIOLATIONS)],
)
def test_rule_violation_names_field_and_rule(
    endpoint: str, changes: dict[str, Any], field: str, phrase: str, rule: str | None
) -> None:
    """Each documented rule, broken, yields an issue on its field that says the rule in words."""
    arguments, issues = spec_for(endpoint).validate(_with(endpoint, changes))
    assert arguments is None
    matching = [issue for issue in issues if issue.field == field]
    assert matching, f"no issue on {field}: {issues}"
    assert any(phrase in issue.message for issue in matching), matching


def test_every_rule_row_is_broken_by_a_case() -> None:
    """Each rule row of RULES, on each endpoint it names, is broken by a VIOLATIONS case that
    reports on the row's field: the table and the models say the same thing."""
    by_id = {rule.id: rule for rule in RULES}
    assert len(by_id) == len(RULES), "rule ids are unique"
    covered = set()
    for endpoint, _changes, field, _phrase, rule_id in VIOLATIONS:
        if rule_id is None:
            continue
        rule = by_id[rule_id]
        assert endpoint in rule.endpoints, (rule_id, endpoint)
        assert field.split(".")[0].split("[")[0] == rule.field, (rule_id, field)
        covered.add((rule_id, endpoint))
    missing = {(r.id, e) for r in RULES for e in r.endpoints} - covered
    assert not missing, f"rules without a test case: {sorted(missing)}"


def test_all_broken_rules_are_reported_together() -> None:
    """A job breaking three cross-field rules hears about all three at once."""
    data = _with(
        VIDEO_TO_VIDEO,
        {"hdr": True, "exr_export": False, "auto_controls": True, "edit_strength": "flex_1"},
    )
    data["keyframe_indexes"] = [1]
    _, issues = spec_for(VIDEO_TO_VIDEO).validate(data)
    assert {issue.field for issue in issues} == {"hdr", "auto_controls", "keyframe_indexes"}


def test_valid_combinations_are_accepted() -> None:
    """HDR at 720p with EXR, manual controls with a strength, keyframes with indexes all pass."""
    good = [
        (VIDEO_TO_VIDEO, {"resolution": "720p", "hdr": True, "exr_export": True}),
        (VIDEO_TO_VIDEO, {"edit_strength": "reimagine_3", "controls": {"depth": {"blur": 1}}}),
        (VIDEO_TO_VIDEO, {"keyframes": [IMG, PLACEHOLDER], "keyframe_indexes": [0, 47]}),
        (VIDEO_TO_VIDEO, {"auto_controls": True, "duration": "10s", "user": "u1"}),
        (TEXT_TO_VIDEO, {"loop": True, "aspect_ratio": "21:9"}),
        (TEXT_TO_VIDEO, {"hdr": True, "resolution": "1080p", "exr_export": True}),
        (IMAGE_TO_VIDEO, {"end_image_url": IMG, "aspect_ratio": "3:1"}),
        (REFRAME, {"source_position": {"x_norm": 0, "y_norm": 0.2, "w_norm": 1, "h_norm": 0.8}}),
        (REFRAME, {"resolution": "1080p", "aspect_ratio": "21:9"}),
        # Keyframes unlock 10s and HDR together (fal's types, 2026-08-02).
        (
            IMAGE_TO_VIDEO,
            {**I2V_KEYFRAMES, "duration": "10s", "hdr": True, "resolution": "1080p"},
        ),
        (
            IMAGE_TO_VIDEO,
            {"image_url": DROP, "keyframes": [IMG], "keyframe_indexes": [240], "duration": "10s"},
        ),  # fmt: skip
        (IMAGE_TO_VIDEO, {"hdr": True, "resolution": "720p", "exr_export": True}),
        # manga has no aspect rule on fal's page (2026-12-04): the seed's rule is gone.
        (TEXT_TO_IMAGE, {"style": "manga", "aspect_ratio": "16:9", "enable_web_search": True}),
        (EDIT_IMAGE, {"reference_image_urls": [IMG, "data:image/png;base64,AAAA"]}),
    ]
    for endpoint, changes in good:
        assert isinstance(changes, dict)
        arguments, issues = spec_for(endpoint).validate(_with(endpoint, changes))
        assert issues == [], (endpoint, changes, issues)
        assert arguments is not None


def test_defaults_are_filled_and_explicit_defaults_change_nothing() -> None:
    """Omitting a documented default or writing it out gives the same arguments."""
    spec = spec_for(VIDEO_TO_VIDEO)
    implicit, _ = spec.validate(VALID[VIDEO_TO_VIDEO])
    explicit, _ = spec.validate(
        _with(
            VIDEO_TO_VIDEO,
            {"resolution": "540p", "duration": "5s", "hdr": False, "edit_strength": None},
        )
    )
    assert implicit == explicit
    assert implicit is not None
    assert implicit["resolution"] == "540p" and implicit["duration"] == "5s"
    assert "edit_strength" not in implicit


def test_numbers_are_canonical() -> None:
    """An integer written where a float is meant gives the same arguments as the float."""
    spec = spec_for(VIDEO_TO_VIDEO)
    as_int, _ = spec.validate(_with(VIDEO_TO_VIDEO, {"controls": {"depth": {"blur": 1}}}))
    as_float, _ = spec.validate(_with(VIDEO_TO_VIDEO, {"controls": {"depth": {"blur": 1.0}}}))
    assert as_int == as_float


def test_pass_through_endpoint_sends_input_as_written() -> None:
    """An endpoint raybatch does not model is validated by nobody and priced at nothing."""
    spec = spec_for("fal-ai/flux/dev")
    data = {"prompt": "x", "anything": [1, 2], "image_size": "square"}
    assert spec.validate(data) == (data, [])
    assert not spec.known and spec.fields is None
    assert spec.source_field_for("video") == "video_url"
    assert spec.media_kind("mask_url") == "any" and spec.media_kind("prompt") is None
    assert estimate_cost("fal-ai/flux/dev", data) is None


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("fal-ai/flux/dev", True),
        ("luma/agent/ray/v3.2/video-to-video", True),
        ("owner/app", True),
        ("justone", False),
        ("owner/app with space", False),
        ("/owner/app", False),
        ("owner/../app", False),
        ("owner/app/", False),
    ],
)
def test_endpoint_ids_look_like_fal_ids(text: str, valid: bool) -> None:
    """Only owner/app[/path] ids without spaces or dot segments are endpoint ids."""
    assert is_endpoint_id(text) is valid
    if not valid:
        with pytest.raises(ValueError, match="not a fal endpoint id"):
            spec_for(text)


def test_registry_knows_sources_and_outputs() -> None:
    """Each endpoint knows where its clip or image goes and what it produces."""
    expected = {
        VIDEO_TO_VIDEO: ("video_url", "video", ".mp4"),
        TEXT_TO_VIDEO: (None, None, ".mp4"),
        IMAGE_TO_VIDEO: ("image_url", "image", ".mp4"),
        REFRAME: ("video_url", "video", ".mp4"),
        TEXT_TO_IMAGE: (None, None, ".png"),
        EDIT_IMAGE: ("image_url", "image", ".png"),
    }
    assert set(ENDPOINTS) == set(expected)
    for endpoint, (field, kind, ext) in expected.items():
        spec = ENDPOINTS[endpoint]
        assert (spec.source_field, spec.source_kind, spec.output_ext({})) == (field, kind, ext)
    assert ENDPOINTS[TEXT_TO_IMAGE].output_ext({"output_format": "jpeg"}) == ".jpg"
    assert ENDPOINTS[VIDEO_TO_VIDEO].source_field_for("image") is None
    assert ENDPOINTS[VIDEO_TO_VIDEO].media_kind("keyframes") == "image"
    assert ENDPOINTS[EDIT_IMAGE].media_kind("reference_image_urls") == "image"


def test_output_models_parse_fal_results() -> None:
    """Video and image results parse, extra keys and the optional EXR included."""
    video = VideoOutput.model_validate(
        {"video": {"url": URL, "file_size": 12}, "exr_file": {"url": URL + ".exr"}, "seed": 3}
    )
    assert video.exr_file is not None and video.video.file_size == 12
    assert VideoOutput.model_validate({"video": {"url": URL}}).exr_file is None
    images = ImageOutput.model_validate({"images": [{"url": IMG, "content_type": "image/png"}]})
    assert images.images[0].content_type == "image/png"


def _grid(resolution: str, duration: str, hdr: bool = False, exr: bool = False) -> dict[str, Any]:
    return {"resolution": resolution, "duration": duration, "hdr": hdr, "exr_export": exr}


@pytest.mark.parametrize(
    ("endpoint", "arguments", "seconds", "usd"),
    [
        # fal's video-to-video page, read 2026-12-04.
        (VIDEO_TO_VIDEO, _grid("720p", "10s", True, True), None, 6.48),
        (VIDEO_TO_VIDEO, _grid("540p", "5s"), None, 0.72),
        (VIDEO_TO_VIDEO, _grid("1080p", "5s", True), None, 4.32),
        (VIDEO_TO_VIDEO, _grid("1080p", "10s", True, True), None, 12.96),
        # fal's reframe page: $0.06 / $0.12 / $0.36 per started source second.
        (REFRAME, {"resolution": "720p"}, 4.2, 0.60),  # 5 started seconds x $0.12
        (REFRAME, {"resolution": "540p"}, 5.0, 0.30),  # exactly 5 s is 5 seconds
        (REFRAME, {"resolution": "1080p"}, 10.0004, 3.60),  # header rounding is not a 11th second
        (REFRAME, {"resolution": "1080p"}, 30.0, 10.80),
        # fal's image-to-video page: $0.50 at 540p/5s, $1 at 720p, $2 at 1080p; 10s double.
        (IMAGE_TO_VIDEO, _grid("540p", "5s"), None, 0.50),
        (IMAGE_TO_VIDEO, _grid("720p", "5s"), None, 1.00),
        (IMAGE_TO_VIDEO, _grid("1080p", "5s"), None, 2.00),
        (IMAGE_TO_VIDEO, _grid("540p", "10s"), None, 1.00),
        (IMAGE_TO_VIDEO, _grid("720p", "10s"), None, 2.00),
        (IMAGE_TO_VIDEO, _grid("1080p", "10s"), None, 4.00),
        # Estimates: HDR 2x and HDR + EXR 3x the SDR cell, as fal prices HDR edits.
        (IMAGE_TO_VIDEO, _grid("720p", "5s", True), None, 2.00),
        (IMAGE_TO_VIDEO, _grid("1080p", "10s", True, True), None, 12.00),
        # Estimate: text-to-video priced as image-to-video (fal publishes no card).
        (TEXT_TO_VIDEO, _grid("1080p", "10s"), None, 4.00),
        (TEXT_TO_VIDEO, _grid("720p", "5s", True, True), None, 3.00),
        # fal's Uni-1 pages: $0.042 an image; edits $0.003 more per source/reference image.
        (TEXT_TO_IMAGE, {"prompt": "x"}, None, 0.042),
        (TEXT_TO_IMAGE, {"prompt": "x", "reference_image_urls": [IMG]}, None, 0.042),
        (EDIT_IMAGE, {"image_url": IMG}, None, 0.045),
        (EDIT_IMAGE, {"image_url": IMG, "reference_image_urls": [IMG, IMG]}, None, 0.051),
    ],
)
def test_price_table_lookups(
    endpoint: str, arguments: dict[str, Any], seconds: float | None, usd: float
) -> None:
    """Hand-computed prices from fal's pages: table cells, per-second reframe, per-image
    Uni-1 edit, and the cells that are estimates."""
    info = MediaInfo("video", "mp4", None, None, None, seconds, None, None)
    assert estimate_cost(endpoint, arguments, info if seconds else None) == pytest.approx(usd)


def test_image_to_video_is_priced_as_fals_page_says() -> None:
    """The image-to-video rows cite fal's own page (not Luma's direct $0.15) and its date."""
    rows = DEFAULT_PRICES.rows(IMAGE_TO_VIDEO)
    sdr = {(r.when["resolution"], r.when["duration"]): r for r in rows if not r.when["hdr"]}
    assert {key: row.usd for key, row in sdr.items()} == {
        ("540p", "5s"): 0.5, ("720p", "5s"): 1.0, ("1080p", "5s"): 2.0,
        ("540p", "10s"): 1.0, ("720p", "10s"): 2.0, ("1080p", "10s"): 4.0,
    }  # fmt: skip
    for row in sdr.values():
        assert row.source == "fal.ai/models/luma/agent/ray/v3.2/image-to-video/llms.txt"
        assert row.date == "2026-12-04" and not row.note
    hdr = [r for r in rows if r.when["hdr"]]
    assert hdr and all(r.note.startswith("estimate") for r in hdr)


def test_reframe_without_a_known_length_has_no_price() -> None:
    """Reframe bills source seconds, so an unprobed source leaves the cost unknown."""
    assert estimate_cost(REFRAME, {"resolution": "720p"}, None) is None


@pytest.mark.parametrize("endpoint", [VIDEO_TO_VIDEO, TEXT_TO_VIDEO, IMAGE_TO_VIDEO])
def test_every_accepted_ray_combination_has_a_price(endpoint: str) -> None:
    """No input the model accepts falls through the price table, keyframed 10s HDR
    image-to-video included."""
    spec = spec_for(endpoint)
    grid = itertools.product(("540p", "720p", "1080p"), ("5s", "10s"), (False, True), (False, True))
    accepted = 0
    for resolution, duration, hdr, exr in grid:
        changes = {"resolution": resolution, "duration": duration, "hdr": hdr, "exr_export": exr}
        for anchor in ({}, I2V_KEYFRAMES) if endpoint == IMAGE_TO_VIDEO else ({},):
            arguments, _ = spec.validate(_with(endpoint, {**changes, **anchor}))
            if arguments is not None:
                accepted += 1
                assert estimate_cost(endpoint, arguments) is not None, (changes, anchor)
    assert accepted >= 7


def _user_rows(tables: EndpointTables) -> list[EndpointRow]:
    return [row for row in endpoint_rows(tables) if row.user]


MANIFEST_CITE = Cite("manifest /m.yaml", "2026-12-01")
FILE_CITE = Cite("prices file /p.yaml", "2026-12-02")


def test_every_row_of_every_table_has_a_source_and_a_date() -> None:
    """The tables are data with provenance: every price, limit and rule row, and every row
    ``raybatch endpoints`` prints (fields included, user rows included), names its source
    and the date that source said it."""
    layer = Overrides(
        {VIDEO_TO_VIDEO: [PriceOverride(usd=1.0)], "fal-ai/other": [PriceOverride(usd=0.1)]},
        {REFRAME: LimitOverrides(max_source_seconds=12)},
        FILE_CITE,
    )
    rows: list[Any] = [*PRICES, *LIMITS, *RULES, *endpoint_rows(EndpointTables([layer]))]
    for row in rows:
        assert row.source.strip() and row.date.strip(), row
    kinds = {row.kind for row in endpoint_rows()}
    assert kinds == {"field", "rule", "limit", "price"}
    assert {row.endpoint for row in endpoint_rows()} == set(ENDPOINTS)


@pytest.mark.parametrize("table", ["prices", "limits", "rules", "endpoint rows"])
def test_a_row_without_source_or_date_is_caught(table: str) -> None:
    """The provenance check fails on a row that lacks its source or its date (the check
    above would catch a new uncited row)."""
    from runner.endpoints import Limit, Price, Rule

    bad: Any = {
        "prices": Price(VIDEO_TO_VIDEO, 1.0, source="fal", date=""),
        "limits": Limit(REFRAME, "max_source_seconds", 1.0, "", "2026-12-04"),
        "rules": Rule("x", (REFRAME,), "hdr", "text", Cite("fal", " ")),
        "endpoint rows": EndpointRow(REFRAME, "rule", "hdr", "text", "", "2026-12-04"),
    }[table]
    assert not (bad.source.strip() and bad.date.strip())


def test_manifest_price_rows_replace_an_endpoints_table() -> None:
    """A user's prices: for an endpoint replace its rows, marked as theirs with their file and
    date; other endpoints keep theirs."""
    at_720p = PriceOverride(usd=1.0, when={"resolution": "720p"})
    table = DEFAULT_PRICES.with_overrides(
        {
            VIDEO_TO_VIDEO: [at_720p, PriceOverride(usd=0.5)],
            "fal-ai/other": [PriceOverride(usd=0.01, per="source_second")],
        },
        MANIFEST_CITE,
    )
    assert table.estimate(VIDEO_TO_VIDEO, {"resolution": "720p"}) == 1.0
    assert table.estimate(VIDEO_TO_VIDEO, {"resolution": "1080p"}) == 0.5
    assert table.estimate("fal-ai/other", {}, 2.5) == pytest.approx(0.03)
    assert table.estimate(TEXT_TO_IMAGE, {}) == 0.042
    first = table.rows(VIDEO_TO_VIDEO)[0]
    assert (first.source, first.date, first.user) == ("manifest /m.yaml", "2026-12-01", True)
    assert not table.rows(TEXT_TO_IMAGE)[0].user


def test_a_prices_file_wins_over_the_manifest_per_endpoint() -> None:
    """Layers apply in order: the --prices file (last) replaces the manifest's rows for the
    endpoints it names; the manifest's other endpoints keep the manifest's rows."""
    manifest = Overrides(
        {VIDEO_TO_VIDEO: [PriceOverride(usd=9.0)], REFRAME: [PriceOverride(usd=0.5)]},
        {VIDEO_TO_VIDEO: LimitOverrides(max_source_seconds=18, max_file_bytes=10)},
        MANIFEST_CITE,
    )
    prices_file = Overrides(
        {VIDEO_TO_VIDEO: [PriceOverride(usd=0.6)]},
        {VIDEO_TO_VIDEO: LimitOverrides(max_source_seconds=12)},
        FILE_CITE,
    )
    tables = EndpointTables([manifest, prices_file])
    assert tables.prices.estimate(VIDEO_TO_VIDEO, {}) == 0.6
    assert tables.prices.rows(VIDEO_TO_VIDEO)[0].source == "prices file /p.yaml"
    assert tables.prices.estimate(REFRAME, {}) == 0.5
    assert tables.prices.rows(REFRAME)[0].source == "manifest /m.yaml"
    limits = tables.limits_for(VIDEO_TO_VIDEO)
    assert (limits["max_source_seconds"].number, limits["max_source_seconds"].source) == (
        12,
        "prices file /p.yaml",
    )
    # Limits merge per limit: the manifest's file-size limit stands beside the file's.
    assert (limits["max_file_bytes"].number, limits["max_file_bytes"].date) == (10, "2026-12-01")
    assert limits["video_containers"].user is False
    reversed_order = EndpointTables([prices_file, manifest])
    assert reversed_order.prices.estimate(VIDEO_TO_VIDEO, {}) == 9.0
    assert Overrides({}, {}, FILE_CITE).digest() != prices_file.digest()
    assert Overrides(prices_file.prices, prices_file.limits, MANIFEST_CITE).digest() == (
        prices_file.digest()
    )


def test_limits_table_defaults_and_overrides() -> None:
    """v2v accepts 10 s and reframe 30 s by default (fal's pages, 2026-12-04); a user's
    limits: raise that and are cited to the user's file."""
    v2v = limits_for(VIDEO_TO_VIDEO)
    assert v2v["max_source_seconds"].number == 10
    assert v2v["max_source_seconds"].cite == (
        "(fal.ai/models/luma/agent/ray/v3.2/video-to-video/llms.txt, 2026-12-04)"
    )
    assert "mp4" in v2v["video_containers"].choices
    assert limits_for(REFRAME)["max_source_seconds"].number == 30
    assert "max_source_seconds" not in limits_for(IMAGE_TO_VIDEO)
    assert limits_for("fal-ai/other") == {}
    raised = limits_for(
        VIDEO_TO_VIDEO,
        [(LimitOverrides(max_source_seconds=18, video_containers=[".MKV", "mp4"]), MANIFEST_CITE)],
    )
    assert raised["max_source_seconds"].number == 18
    assert raised["max_source_seconds"].cite == "(manifest /m.yaml, 2026-12-01)"
    assert raised["video_containers"].choices == ("mkv", "mp4")
    assert raised["max_file_bytes"].source.startswith("github.com/calesthio")


def test_user_rows_are_dated_by_their_files_mtime(tmp_path: Path) -> None:
    """A user's file is cited by name and dated by its modification day (UTC), or 'user'."""
    path = tmp_path / "prices.yaml"
    path.write_text("{}")
    os.utime(path, (1_780_000_000, 1_780_000_000))  # 2026-05-28 UTC
    assert user_cite("prices file", path) == Cite(f"prices file {path}", "2026-05-28")
    assert user_cite("manifest", tmp_path / "gone.yaml").date == "user"


def test_endpoint_rows_mark_the_users_rows() -> None:
    """``raybatch endpoints`` rows: the user's prices and limits are marked as theirs, a
    pass-through endpoint they priced is listed, and the text output marks them with *."""
    layer = Overrides(
        {"fal-ai/upscaler": [PriceOverride(usd=0.2, per="source_second")]},
        {REFRAME: LimitOverrides(max_source_seconds=12)},
        FILE_CITE,
    )
    tables = EndpointTables([layer])
    mine = _user_rows(tables)
    assert {(r.endpoint, r.kind, r.name) for r in mine} == {
        ("fal-ai/upscaler", "price", "per source second"),
        (REFRAME, "limit", "max_source_seconds"),
    }
    assert all(r.source == "prices file /p.yaml" and r.date == "2026-12-02" for r in mine)
    text = format_endpoints(endpoint_rows(tables))
    assert "fal-ai/upscaler  (pass-through: sent unchecked)" in text
    assert "*price  per source second" in text and "$0.2" in text
    assert "* your rows" in text
    assert "* your rows" not in format_endpoints(endpoint_rows())
    data = json.loads(rows_as_json(endpoint_rows(tables)))
    upscaler = data["endpoints"]["fal-ai/upscaler"]
    assert upscaler == [
        {
            "kind": "price",
            "name": "per source second",
            "value": "$0.2",
            "source": "prices file /p.yaml",
            "date": "2026-12-02",
            "note": "",
            "user": True,
        }
    ]


def test_endpoint_rows_describe_fields_from_the_models() -> None:
    """Field rows come from the input models: choices, bounds, defaults, required; refused
    fields are not listed as fields (their rule rows say why)."""
    rows = {(r.endpoint, r.name): r for r in endpoint_rows() if r.kind == "field"}
    assert rows[(IMAGE_TO_VIDEO, "aspect_ratio")].value.startswith("one of 3:1, 2:1, 21:9")
    assert rows[(VIDEO_TO_VIDEO, "prompt")].value == "text, 1-6000 characters; required"
    assert rows[(REFRAME, "resolution")].value == 'one of 540p, 720p, 1080p; default "540p"'
    assert rows[(IMAGE_TO_VIDEO, "keyframes")].value == "list of text, 1-64"
    assert rows[(IMAGE_TO_VIDEO, "keyframes")].date == "2026-08-02"
    assert (REFRAME, "duration") not in rows and (REFRAME, "hdr") not in rows
    assert (VIDEO_TO_VIDEO, "loop") not in rows
    assert rows[(TEXT_TO_IMAGE, "aspect_ratio")].value.count(":") == 9


@pytest.mark.parametrize(
    ("endpoint", "passthrough", "phrase"),
    [
        (
            "luma/agent/ray/v3.2/video-to-vidoe",
            False,
            "did you mean 'luma/agent/ray/v3.2/video-to-video'? To send jobs to it unchecked,"
            " set passthrough: true",
        ),
        ("fal-ai/flux/dev", False, "'fal-ai/flux/dev'. To send jobs to it unchecked"),
        (VIDEO_TO_VIDEO, True, "is an endpoint raybatch knows"),
    ],
)
def test_endpoint_problem(endpoint: str, passthrough: bool, phrase: str) -> None:
    """An unknown endpoint needs passthrough (with a 'did you mean' for a near miss); a
    known one must not claim it."""
    problem = endpoint_problem(endpoint, passthrough)
    assert problem is not None and phrase in problem


def test_endpoint_problem_accepts_known_and_declared_endpoints() -> None:
    """A known endpoint as it is, and an unknown one with passthrough: true, are fine."""
    assert endpoint_problem(VIDEO_TO_VIDEO, False) is None
    assert endpoint_problem("fal-ai/flux/dev", True) is None


def test_unpriced_refusal_says_what_prices_each_endpoint() -> None:
    """The --max-cost refusal names each unpriced endpoint, its count and its remedy."""
    message = unpriced_refusal({"fal-ai/x": 3, REFRAME: 2})
    assert "fal-ai/x: 3 job(s) without a price; add a prices: row for it" in message
    assert f"{REFRAME}: 2 job(s) without a price" in message and "--probe-remote" in message
    assert "nothing was submitted" in message


def test_check_field_validates_one_value() -> None:
    """A single field (a prompt) can be checked without building a whole input."""
    spec = spec_for(TEXT_TO_VIDEO)
    assert spec.check_field("prompt", "fine") == []
    [issue] = spec.check_field("prompt", "")
    assert issue.field == "prompt" and "at least 1 character" in issue.message
    assert spec_for("fal-ai/x").check_field("prompt", "") == []
