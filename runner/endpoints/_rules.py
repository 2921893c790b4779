"""The cross-field rules of each known endpoint, as cited rows.

The input models in ``luma`` enforce these; this table says what each rule is, where it
comes from and when that source said it, for ``raybatch endpoints`` and for review. A rule
row names the field its violation is reported on; the tests break every row on purpose and
check that the model reports it on that field (tests/test_endpoints.py, ``VIOLATIONS``).
"""

from __future__ import annotations

from dataclasses import dataclass

from runner.endpoints._cite import (
    FAL_I2V,
    FAL_REFRAME,
    FAL_TYPES,
    FAL_V2V,
    LUMA_REFRAME_DOCS,
    LUMA_SDK,
    SKILL,
    Cite,
)
from runner.endpoints._registry import (
    EDIT_IMAGE,
    IMAGE_TO_VIDEO,
    REFRAME,
    TEXT_TO_IMAGE,
    TEXT_TO_VIDEO,
    VIDEO_TO_VIDEO,
)

RAY_HDR = (TEXT_TO_VIDEO, IMAGE_TO_VIDEO, VIDEO_TO_VIDEO)
ALL = (*RAY_HDR, REFRAME, TEXT_TO_IMAGE, EDIT_IMAGE)


@dataclass(frozen=True, slots=True)
class Rule:
    """One rule: which endpoints, the field it is reported on, the rule in words, its source."""

    id: str
    endpoints: tuple[str, ...]
    field: str
    text: str
    cite: Cite
    note: str = ""

    @property
    def source(self) -> str:
        """Where the rule comes from."""
        return self.cite.source

    @property
    def date(self) -> str:
        """When that source said it."""
        return self.cite.date


RULES: tuple[Rule, ...] = (
    Rule(
        "prompt-length",
        ALL,
        "prompt",
        "the prompt is 1 to 6000 characters",
        LUMA_REFRAME_DOCS,
        "Luma's guides give 1-6,000 characters for every Ray 3.2 and Uni-1 request",
    ),
    Rule(
        "hdr-resolution",
        RAY_HDR,
        "hdr",
        "HDR needs resolution 720p or 1080p (and HDR access on the fal account)",
        FAL_TYPES,
        "fal's video-to-video page agrees: '540p not available in HDR' (2026-12-04)",
    ),
    Rule("exr-needs-hdr", RAY_HDR, "exr_export", "EXR export needs hdr: true", FAL_TYPES),
    Rule(
        "t2v-hdr-5s",
        (TEXT_TO_VIDEO,),
        "hdr",
        "HDR text-to-video is 5s only",
        FAL_TYPES,
        "'not supported with 10s or loop'",
    ),
    Rule(
        "loop-5s",
        (TEXT_TO_VIDEO, IMAGE_TO_VIDEO),
        "loop",
        "a loop is 5s long",
        FAL_TYPES,
        "image-to-video reaches 10s only with keyframes, which exclude a loop",
    ),
    Rule("loop-sdr", (TEXT_TO_VIDEO, IMAGE_TO_VIDEO), "loop", "a loop cannot be HDR", FAL_TYPES),
    Rule(
        "i2v-loop-end-frame",
        (IMAGE_TO_VIDEO,),
        "loop",
        "a loop has no end frame (end_image_url)",
        FAL_TYPES,
    ),
    Rule(
        "i2v-anchor",
        (IMAGE_TO_VIDEO,),
        "image_url",
        "image-to-video needs a start frame (image_url) or keyframes",
        FAL_I2V,
        "fal's page marks image_url required; its types of 2026-08-02 make it optional when"
        " keyframes are given: both are honoured",
    ),
    Rule(
        "i2v-keyframes-alone",
        (IMAGE_TO_VIDEO,),
        "keyframes",
        "keyframes cannot be combined with image_url or end_image_url",
        FAL_TYPES,
    ),
    Rule("i2v-keyframes-loop", (IMAGE_TO_VIDEO,), "loop", "a loop cannot use keyframes", FAL_TYPES),
    Rule(
        "i2v-10s-keyframes",
        (IMAGE_TO_VIDEO,),
        "duration",
        "10s image-to-video needs keyframes; a start/end frame makes 5s clips",
        FAL_TYPES,
        "with keyframes, 10s and HDR are both available ('unlocks 10s and HDR')",
    ),
    Rule(
        "i2v-keyframe-frames",
        (IMAGE_TO_VIDEO,),
        "keyframe_indexes",
        "keyframe indexes are output frames at 24 fps: 0-120 for 5s, 0-240 for 10s",
        FAL_TYPES,
    ),
    Rule(
        "keyframes-count",
        (IMAGE_TO_VIDEO, VIDEO_TO_VIDEO),
        "keyframes",
        "1 to 64 keyframes",
        FAL_TYPES,
    ),
    Rule(
        "keyframe-indexes-pair",
        (IMAGE_TO_VIDEO, VIDEO_TO_VIDEO),
        "keyframe_indexes",
        "one non-negative, unique index per keyframe",
        FAL_TYPES,
    ),
    Rule(
        "v2v-auto-controls-strength",
        (VIDEO_TO_VIDEO,),
        "auto_controls",
        "auto_controls: true cannot be combined with edit_strength",
        FAL_TYPES,
    ),
    Rule(
        "v2v-auto-controls-controls",
        (VIDEO_TO_VIDEO,),
        "auto_controls",
        "auto_controls: true cannot be combined with controls",
        FAL_TYPES,
    ),
    Rule(
        "v2v-keyframes-start-image",
        (VIDEO_TO_VIDEO,),
        "keyframes",
        "keyframes and start_image_url cannot be used together",
        FAL_TYPES,
    ),
    Rule(
        "v2v-no-loop",
        (VIDEO_TO_VIDEO,),
        "loop",
        "loop is not available for edits",
        Cite("fal.ai/models/luma/agent/ray/v3.2/video-to-video/api", FAL_V2V.date),
        "'loop does not apply to editing an existing clip'",
    ),
    Rule(
        "v2v-no-end-frame",
        (VIDEO_TO_VIDEO,),
        "end_image_url",
        "an edit has no end frame",
        SKILL,
    ),
    Rule(
        "v2v-no-aspect",
        (VIDEO_TO_VIDEO,),
        "aspect_ratio",
        "an edit keeps its source's aspect ratio",
        SKILL,
    ),
    Rule(
        "reframe-no-hdr",
        (REFRAME,),
        "hdr",
        "HDR is not available for reframe",
        FAL_TYPES,
        "fal's types have no hdr field; Luma's SDK: 'Not supported for video_reframe'",
    ),
    Rule(
        "reframe-no-exr",
        (REFRAME,),
        "exr_export",
        "EXR export is not available for reframe",
        FAL_TYPES,
        "fal's types have no exr_export field; Luma's SDK: 'Not supported for video_reframe'",
    ),
    Rule(
        "reframe-no-duration",
        (REFRAME,),
        "duration",
        "reframe has no duration: the output follows the source's length",
        FAL_TYPES,
        "fal's page lists no duration either (2026-12-04); raybatch's seed accepted 5s/10s"
        " from a third party's reading of 2026-10-08",
    ),
    Rule("reframe-no-loop", (REFRAME,), "loop", "loop is not available for reframe", FAL_TYPES),
    Rule(
        "reframe-1080p-vertical",
        (REFRAME,),
        "resolution",
        "1080p is not available for 9:16 and 3:4 reframes",
        LUMA_REFRAME_DOCS,
        "fal's page is silent; Luma's guide: 'vertical targets at 1080p are not yet available'",
    ),
    Rule(
        "reframe-source-inside",
        (REFRAME,),
        "source_position",
        "source_position lies inside the canvas (x, y >= 0; x + w, y + h <= 1)",
        FAL_REFRAME,
        "fal's types say only 'fraction of output'; Luma's SDK lets the source bleed off the"
        f" canvas (w, h up to 2; {LUMA_SDK}): raybatch keeps the stricter reading",
    ),
)


def rules_for(endpoint: str) -> list[Rule]:
    """The rule rows that apply to ``endpoint`` (none for a pass-through endpoint)."""
    return [rule for rule in RULES if endpoint in rule.endpoints]
