"""The six Luma endpoint models, the limits table and the price table, case by case."""

from __future__ import annotations

import itertools
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
    TEXT_TO_IMAGE,
    TEXT_TO_VIDEO,
    VIDEO_TO_VIDEO,
    ImageOutput,
    LimitOverrides,
    PriceOverride,
    VideoOutput,
    estimate_cost,
    is_endpoint_id,
    limits_for,
    spec_for,
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

# (endpoint, changes to the valid input, field the issue names, phrase of its message)
VIOLATIONS: list[tuple[str, dict[str, Any], str, str]] = [
    (VIDEO_TO_VIDEO, {"prompt": ""}, "prompt", "at least 1 character"),
    (VIDEO_TO_VIDEO, {"prompt": "x" * 6001}, "prompt", "at most 6000 characters"),
    (VIDEO_TO_VIDEO, {"video_url": DROP}, "video_url", "required"),
    (VIDEO_TO_VIDEO, {"video_url": "file:///tmp/a.mp4"}, "video_url", "file:// URLs are not"),
    (VIDEO_TO_VIDEO, {"video_url": "media/a.mp4"}, "video_url", "must be an http(s) URL"),
    (VIDEO_TO_VIDEO, {"resolution": "480p"}, "resolution", "'480p' is not one of 540p, 720p"),
    (VIDEO_TO_VIDEO, {"duration": "15s"}, "duration", "is not one of 5s, 10s"),
    (VIDEO_TO_VIDEO, {"edit_strength": "strong"}, "edit_strength", "not one of adhere_1"),
    (VIDEO_TO_VIDEO, {"hdr": True}, "hdr", "HDR needs resolution 720p or 1080p (got 540p)"),
    (VIDEO_TO_VIDEO, {"exr_export": True}, "exr_export", "EXR export needs hdr: true"),
    (
        VIDEO_TO_VIDEO,
        {"auto_controls": True, "edit_strength": "flex_1"},
        "auto_controls",
        "cannot be combined with edit_strength",
    ),
    (
        VIDEO_TO_VIDEO,
        {"auto_controls": True, "controls": {"face": {"enabled": True}}},
        "auto_controls",
        "cannot be combined with controls",
    ),
    (VIDEO_TO_VIDEO, {"controls": {"depth": {"blur": 1.5}}}, "controls.depth.blur", "less than"),
    (
        VIDEO_TO_VIDEO,
        {"controls": {"pose": {"strength": "loose"}}},
        "controls.pose.strength",
        "not one of precise, coarse",
    ),
    (
        VIDEO_TO_VIDEO,
        {"controls": {"depth": {"blurr": 0.5}}},
        "controls.depth.blurr",
        "did you mean 'blur'?",
    ),
    (
        VIDEO_TO_VIDEO,
        {"keyframes": [IMG] * 65, "keyframe_indexes": list(range(65))},
        "keyframes",
        "at most 64",
    ),
    (
        VIDEO_TO_VIDEO,
        {"keyframes": [IMG, IMG], "keyframe_indexes": [0]},
        "keyframe_indexes",
        "one index per keyframe (2 keyframes, 1 indexes)",
    ),
    (
        VIDEO_TO_VIDEO,
        {"keyframes": [IMG, IMG], "keyframe_indexes": [3, 3]},
        "keyframe_indexes",
        "must be unique",
    ),
    (
        VIDEO_TO_VIDEO,
        {"keyframes": [IMG], "keyframe_indexes": [-1]},
        "keyframe_indexes[0]",
        "greater than or equal to 0",
    ),
    (
        VIDEO_TO_VIDEO,
        {"keyframes": [IMG], "keyframe_indexes": [0], "start_image_url": IMG},
        "keyframes",
        "cannot be used together",
    ),
    (VIDEO_TO_VIDEO, {"loop": True}, "loop", "loop is not available for video-to-video edits"),
    (VIDEO_TO_VIDEO, {"aspect_ratio": "1:1"}, "aspect_ratio", "keeps the source's aspect ratio"),
    (VIDEO_TO_VIDEO, {"end_image_url": IMG}, "end_image_url", "end frame is not available"),
    (VIDEO_TO_VIDEO, {"resolutoin": "720p"}, "resolutoin", "did you mean 'resolution'?"),
    (TEXT_TO_VIDEO, {"aspect_ratio": "2:1"}, "aspect_ratio", "'2:1' is not one of 9:16, 3:4"),
    (TEXT_TO_VIDEO, {"loop": True, "duration": "10s"}, "loop", "a loop can only be 5s long"),
    (
        TEXT_TO_VIDEO,
        {"loop": True, "hdr": True, "resolution": "720p"},
        "loop",
        "a loop cannot be HDR",
    ),
    (
        TEXT_TO_VIDEO,
        {"hdr": True, "resolution": "1080p", "duration": "10s"},
        "hdr",
        "HDR is only available for 5s clips",
    ),
    (TEXT_TO_VIDEO, {"hdr": True}, "hdr", "HDR needs resolution 720p or 1080p"),
    (TEXT_TO_VIDEO, {"exr_export": True}, "exr_export", "needs hdr"),
    (
        TEXT_TO_VIDEO,
        {"reference_image_urls": ["ftp://host/a.png"]},
        "reference_image_urls[0]",
        "scheme ftp:// is not accepted",
    ),
    (TEXT_TO_VIDEO, {"image_url": IMG}, "image_url", "unknown field 'image_url'"),
    (IMAGE_TO_VIDEO, {"image_url": DROP}, "image_url", "required"),
    (IMAGE_TO_VIDEO, {"duration": "10s"}, "duration", "makes 5s clips only (got 10s)"),
    (
        IMAGE_TO_VIDEO,
        {"loop": True, "end_image_url": IMG},
        "loop",
        "a loop cannot have an end frame",
    ),
    (
        IMAGE_TO_VIDEO,
        {"loop": True, "hdr": True, "resolution": "720p"},
        "loop",
        "a loop cannot be HDR",
    ),
    (IMAGE_TO_VIDEO, {"aspect_ratio": "5:4"}, "aspect_ratio", "'5:4' is not one of"),
    (IMAGE_TO_VIDEO, {"hdr": True}, "hdr", "HDR needs resolution 720p or 1080p"),
    (REFRAME, {"aspect_ratio": DROP}, "aspect_ratio", "required"),
    (REFRAME, {"aspect_ratio": "2:1"}, "aspect_ratio", "is not one of"),
    (
        REFRAME,
        {"resolution": "1080p"},
        "resolution",
        "1080p is not available for 9:16 reframes",
    ),
    (
        REFRAME,
        {"resolution": "1080p", "aspect_ratio": "3:4"},
        "resolution",
        "1080p is not available for 3:4 reframes",
    ),
    (REFRAME, {"hdr": True}, "hdr", "HDR is not available for reframe"),
    (REFRAME, {"exr_export": True}, "exr_export", "EXR export is not available for reframe"),
    (REFRAME, {"loop": True}, "loop", "loop is not available for reframe"),
    (REFRAME, {"duration": "7s"}, "duration", "is not one of 5s, 10s"),
    (
        REFRAME,
        {"source_position": {"x_norm": 0, "y_norm": 0, "w_norm": 1}},
        "source_position.h_norm",
        "required",
    ),
    (
        REFRAME,
        {"source_position": {"x_norm": 0.5, "y_norm": 0, "w_norm": 0.6, "h_norm": 1}},
        "source_position.w_norm",
        "x_norm + w_norm must be at most 1 (got 1.1)",
    ),
    (
        REFRAME,
        {"source_position": {"x_norm": 0, "y_norm": 0.25, "w_norm": 1, "h_norm": 0.8}},
        "source_position.h_norm",
        "y_norm + h_norm must be at most 1",
    ),
    (
        REFRAME,
        {"source_position": {"x_norm": 0, "y_norm": 0, "w_norm": 0, "h_norm": 1}},
        "source_position.w_norm",
        "greater than 0",
    ),
    (
        REFRAME,
        {"source_position": {"x_norm": -0.1, "y_norm": 0, "w_norm": 0.5, "h_norm": 1}},
        "source_position.x_norm",
        "greater than or equal to 0",
    ),
    (TEXT_TO_IMAGE, {"aspect_ratio": "4:5"}, "aspect_ratio", "'4:5' is not one of 3:1"),
    (TEXT_TO_IMAGE, {"style": "watercolor"}, "style", "not one of auto, manga"),
    (TEXT_TO_IMAGE, {"output_format": "webp"}, "output_format", "not one of png, jpeg"),
    (
        TEXT_TO_IMAGE,
        {"style": "manga", "aspect_ratio": "16:9"},
        "aspect_ratio",
        "manga style needs a portrait aspect ratio",
    ),
    (TEXT_TO_IMAGE, {"enable_web_search": "maybe"}, "enable_web_search", "valid boolean"),
    (TEXT_TO_IMAGE, {"image_url": IMG}, "image_url", "unknown field"),
    (EDIT_IMAGE, {"image_url": DROP}, "image_url", "required"),
    (EDIT_IMAGE, {"reference_image_urls": IMG}, "reference_image_urls", "valid list"),
    (EDIT_IMAGE, {"output_format": "gif"}, "output_format", "not one of png, jpeg"),
    (EDIT_IMAGE, {"prompt": DROP}, "prompt", "required"),
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
    ("endpoint", "changes", "field", "phrase"),
    VIOLATIONS,
    ids=[f"{e.rsplit('/', 1)[-1]}-{f}-{i}" for i, (e, _c, f, _p) in enumerate(VIOLATIONS)],
)
def test_rule_violation_names_field_and_rule(
    endpoint: str, changes: dict[str, Any], field: str, phrase: str
) -> None:
    """Each documented rule, broken, yields an issue on its field that says the rule in words."""
    arguments, issues = spec_for(endpoint).validate(_with(endpoint, changes))
    assert arguments is None
    matching = [issue for issue in issues if issue.field == field]
    assert matching, f"no issue on {field}: {issues}"
    assert any(phrase in issue.message for issue in matching), matching


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
        (REFRAME, {"resolution": "1080p", "aspect_ratio": "21:9", "duration": "10s"}),
        (TEXT_TO_IMAGE, {"style": "manga", "aspect_ratio": "9:16", "enable_web_search": True}),
        (EDIT_IMAGE, {"reference_image_urls": [IMG, "data:image/png;base64,AAAA"]}),
    ]
    for endpoint, changes in good:
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


@pytest.mark.parametrize(
    ("endpoint", "arguments", "seconds", "usd"),
    [
        (
            VIDEO_TO_VIDEO,
            {"resolution": "720p", "duration": "10s", "hdr": True, "exr_export": True},
            None,
            6.48,
        ),
        (
            VIDEO_TO_VIDEO,
            {"resolution": "540p", "duration": "5s", "hdr": False, "exr_export": False},
            None,
            0.72,
        ),
        (
            VIDEO_TO_VIDEO,
            {"resolution": "1080p", "duration": "5s", "hdr": True, "exr_export": False},
            None,
            4.32,
        ),
        (REFRAME, {"resolution": "720p"}, 4.2, 0.60),  # 5 started seconds x $0.12
        (REFRAME, {"resolution": "540p"}, 5.0, 0.30),  # exactly 5 s is 5 seconds
        (REFRAME, {"resolution": "1080p"}, 10.0004, 3.60),  # header rounding is not a 11th second
        (
            IMAGE_TO_VIDEO,
            {"resolution": "540p", "duration": "5s", "hdr": False, "exr_export": False},
            None,
            0.15,
        ),
        (
            TEXT_TO_VIDEO,
            {"resolution": "1080p", "duration": "10s", "hdr": False, "exr_export": False},
            None,
            3.60,
        ),
        (TEXT_TO_IMAGE, {"prompt": "x"}, None, 0.042),
        (EDIT_IMAGE, {"image_url": IMG}, None, 0.045),
        (EDIT_IMAGE, {"image_url": IMG, "reference_image_urls": [IMG, IMG]}, None, 0.051),
    ],
)
def test_price_table_lookups(
    endpoint: str, arguments: dict[str, Any], seconds: float | None, usd: float
) -> None:
    """Hand-computed prices: table cells, per-second reframe, per-image Uni-1 edit."""
    info = MediaInfo("video", "mp4", None, None, None, seconds, None, None)
    assert estimate_cost(endpoint, arguments, info if seconds else None) == pytest.approx(usd)


def test_reframe_without_a_known_length_has_no_price() -> None:
    """Reframe bills source seconds, so an unprobed source leaves the cost unknown."""
    assert estimate_cost(REFRAME, {"resolution": "720p"}, None) is None


@pytest.mark.parametrize("endpoint", [VIDEO_TO_VIDEO, TEXT_TO_VIDEO, IMAGE_TO_VIDEO])
def test_every_accepted_ray_combination_has_a_price(endpoint: str) -> None:
    """No input the model accepts falls through the price table."""
    spec = spec_for(endpoint)
    grid = itertools.product(("540p", "720p", "1080p"), ("5s", "10s"), (False, True), (False, True))
    accepted = 0
    for resolution, duration, hdr, exr in grid:
        changes = {"resolution": resolution, "duration": duration, "hdr": hdr, "exr_export": exr}
        arguments, _ = spec.validate(_with(endpoint, changes))
        if arguments is not None:
            accepted += 1
            assert estimate_cost(endpoint, arguments) is not None, changes
    assert accepted >= 7


def test_every_price_and_limit_row_cites_a_source() -> None:
    """The tables are data with provenance: every row names where its number comes from."""
    assert all(row.source for row in PRICES)
    assert all(row.source for row in LIMITS)


def test_manifest_price_rows_replace_an_endpoints_table() -> None:
    """A manifest's prices: for an endpoint replace its rows; other endpoints keep theirs."""
    at_720p = PriceOverride(usd=1.0, when={"resolution": "720p"})
    table = DEFAULT_PRICES.with_overrides(
        {
            VIDEO_TO_VIDEO: [at_720p, PriceOverride(usd=0.5)],
            "fal-ai/other": [PriceOverride(usd=0.01, per="source_second")],
        }
    )
    assert table.estimate(VIDEO_TO_VIDEO, {"resolution": "720p"}) == 1.0
    assert table.estimate(VIDEO_TO_VIDEO, {"resolution": "1080p"}) == 0.5
    assert table.estimate("fal-ai/other", {}, 2.5) == pytest.approx(0.03)
    assert table.estimate(TEXT_TO_IMAGE, {}) == 0.042
    assert table.rows(VIDEO_TO_VIDEO)[0].source == "manifest"


def test_limits_table_defaults_and_overrides() -> None:
    """v2v and reframe accept 10 s by default (fal, 2026-10-08); a manifest may raise that."""
    v2v = limits_for(VIDEO_TO_VIDEO)
    assert v2v["max_source_seconds"].number == 10
    assert v2v["max_source_seconds"].cite == "(fal, 2026-10-08)"
    assert "mp4" in v2v["video_containers"].choices
    assert limits_for(REFRAME)["max_source_seconds"].number == 10
    assert "max_source_seconds" not in limits_for(IMAGE_TO_VIDEO)
    assert limits_for("fal-ai/other") == {}
    raised = limits_for(
        VIDEO_TO_VIDEO,
        LimitOverrides(max_source_seconds=18, video_containers=[".MKV", "mp4"]),
    )
    assert raised["max_source_seconds"].number == 18
    assert raised["max_source_seconds"].source == "manifest"
    assert raised["video_containers"].choices == ("mkv", "mp4")
    assert raised["max_file_bytes"].source == "Luma Agents API"


def test_check_field_validates_one_value() -> None:
    """A single field (a prompt) can be checked without building a whole input."""
    spec = spec_for(TEXT_TO_VIDEO)
    assert spec.check_field("prompt", "fine") == []
    [issue] = spec.check_field("prompt", "")
    assert issue.field == "prompt" and "at least 1 character" in issue.message
    assert spec_for("fal-ai/x").check_field("prompt", "") == []
