"""Input and output models of Luma's endpoints on fal (Ray 3.2 video, Uni-1 images).

Every field, enum and default follows fal's model pages read 2026-12-04 and fal's published
types of 2026-08-02; each cross-field rule is a row of ``_rules.RULES`` with its source and
date (the tests tie each row to the code that enforces it). Where fal's page and its types
disagree the page wins (it is the newer); where fal is silent, the stricter reading of
Luma's own documents wins, because a job refused here costs nothing and one refused by fal
costs a round trip. Rule messages name the rule in words, e.g. ``HDR needs resolution 720p
or 1080p``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, StringConstraints

from runner.endpoints._base import ImageRef, Ruled, Strict, VideoRef, Violation, unavailable

# Ray 3.2 and Uni-1 both take 1-6000 characters (Luma's reframing guide, read 2026-12-04).
Prompt = Annotated[str, StringConstraints(min_length=1, max_length=6000)]
Resolution = Literal["540p", "720p", "1080p"]
Duration = Literal["5s", "10s"]
VideoAspect = Literal["9:16", "3:4", "1:1", "4:3", "16:9", "21:9"]
# fal's image-to-video page (2026-12-04) lists twelve ratios, default 16:9; fal's types of
# 2026-08-02 list only the six video ratios: the page is the newer and wins.
I2VAspect = Literal[
    "3:1", "2:1", "21:9", "16:9", "4:3", "3:2", "1:1", "3:4", "2:3", "9:16", "1:2", "1:3"
]
# fal's Uni-1 text-to-image page and types list nine ratios, no 4:3 or 3:4, and no default.
ImageAspect = Literal["3:1", "2:1", "16:9", "3:2", "1:1", "2:3", "9:16", "1:2", "1:3"]
EditStrength = Literal[
    "adhere_1", "adhere_2", "adhere_3",
    "flex_1", "flex_2", "flex_3",
    "reimagine_1", "reimagine_2", "reimagine_3",
]  # fmt: skip
Unit = Annotated[float, Field(ge=0.0, le=1.0)]
Fraction = Annotated[float, Field(gt=0.0, le=1.0)]
MAX_KEYFRAMES = 64
#: Image-to-video keyframe indexes are output frames at 24 fps (fal's types, 2026-08-02).
FRAMES_PER_SECOND = 24


def keyframe_violations(
    frames: list[str] | None, indexes: list[int] | None, last_frame: int | None = None
) -> Iterator[Violation]:
    """Keyframes and their indexes pair up one to one, indexes unique (and at most
    ``last_frame`` when the frame grid is known)."""
    frames, indexes = frames or [], indexes or []
    if len(frames) != len(indexes):
        yield (
            "keyframe_indexes",
            f"needs one index per keyframe ({len(frames)} keyframes, {len(indexes)} indexes)",
        )
    if len(set(indexes)) != len(indexes):
        yield "keyframe_indexes", "keyframe indexes must be unique"
    if last_frame is not None and any(index > last_frame for index in indexes):
        yield (
            "keyframe_indexes",
            f"keyframe indexes are output frames at {FRAMES_PER_SECOND} fps: at most"
            f" {last_frame} for this duration (got {max(indexes)})",
        )


class LumaInput(Ruled):
    """What every Luma endpoint takes: a prompt of 1 to 6000 characters."""

    prompt: Prompt


class RayInput(LumaInput):
    """A Ray 3.2 video: resolution 540p (default), 720p or 1080p."""

    resolution: Resolution = "540p"


class HdrInput(RayInput):
    """A Ray 3.2 video that can be HDR, optionally with an EXR alongside the MP4."""

    hdr: bool = False
    exr_export: bool = False

    def violations(self) -> Iterator[Violation]:
        """HDR needs 720p/1080p; EXR needs HDR (rules hdr-resolution, exr-needs-hdr)."""
        yield from super().violations()
        if self.hdr and self.resolution == "540p":
            yield "hdr", f"HDR needs resolution 720p or 1080p (got {self.resolution})"
        if self.exr_export and not self.hdr:
            yield "exr_export", "EXR export needs hdr: true"


class GeneratedVideoInput(HdrInput):
    """Text- or image-to-video: 5 s or 10 s, optionally a seamless loop."""

    duration: Duration = "5s"
    loop: bool = False

    def violations(self) -> Iterator[Violation]:
        """Loops are 5 s and SDR (rules loop-5s, loop-sdr)."""
        yield from super().violations()
        if self.loop and self.duration != "5s":
            yield "loop", f"a loop can only be 5s long (got duration {self.duration})"
        if self.loop and self.hdr:
            yield "loop", "a loop cannot be HDR"


class PoseControl(Strict):
    """Follow the source's body poses, precisely or coarsely."""

    enabled: bool | None = None
    strength: Literal["precise", "coarse"] | None = None


class DepthControl(Strict):
    """Follow the source's depth map, blurred by 0-1."""

    enabled: bool | None = None
    blur: Unit | None = None


class NormalsControl(Strict):
    """Follow the source's surface normals, augmented by 0-1."""

    enabled: bool | None = None
    augmentation: Unit | None = None


class TrajectoryControl(Strict):
    """Follow the source's motion trajectories, sparsified by 0-1."""

    enabled: bool | None = None
    sparsity: Unit | None = None


class FaceControl(Strict):
    """Follow the source's facial performance."""

    enabled: bool | None = None


class EditControls(Strict):
    """Per-signal conditioning of a video edit (Agents SDK ``*_control_param``)."""

    pose: PoseControl | None = None
    depth: DepthControl | None = None
    normals: NormalsControl | None = None
    trajectory: TrajectoryControl | None = None
    face: FaceControl | None = None


Keyframes = Annotated[list[ImageRef], Field(min_length=1, max_length=MAX_KEYFRAMES)]


class VideoToVideoInput(HdrInput):
    """``luma/agent/ray/v3.2/video-to-video``: restyle an existing clip (Luma ``video_edit``)."""

    video_url: VideoRef
    start_image_url: ImageRef | None = None
    duration: Duration = "5s"
    edit_strength: EditStrength | None = None
    auto_controls: bool | None = None
    controls: EditControls | None = None
    keyframes: Keyframes | None = None
    keyframe_indexes: list[NonNegativeInt] | None = None
    # Not in fal's types of 2026-08-02; fal's schemas accept unknown fields, so it is sent.
    user: str | None = None
    loop: Annotated[None, unavailable("loop is not available for video-to-video edits")] = None
    end_image_url: Annotated[
        None, unavailable("an end frame is not available for video-to-video edits")
    ] = None
    aspect_ratio: Annotated[
        None,
        unavailable("aspect_ratio is not available for video-to-video edits: the output "
                    "keeps the source's aspect ratio"),
    ] = None  # fmt: skip

    def violations(self) -> Iterator[Violation]:
        """auto_controls excludes manual settings; keyframes pair with unique indexes and
        exclude a start image (rules v2v-auto-controls-*, keyframe-indexes-pair,
        v2v-keyframes-start-image)."""
        yield from super().violations()
        if self.auto_controls and self.edit_strength is not None:
            yield "auto_controls", "auto_controls: true cannot be combined with edit_strength"
        if self.auto_controls and self.controls is not None:
            yield "auto_controls", "auto_controls: true cannot be combined with controls"
        yield from keyframe_violations(self.keyframes, self.keyframe_indexes)
        if self.keyframes and self.start_image_url is not None:
            yield "keyframes", "keyframes and start_image_url cannot be used together"


class TextToVideoInput(GeneratedVideoInput):
    """``luma/agent/ray/v3.2/text-to-video``: a clip from a prompt alone."""

    aspect_ratio: VideoAspect = "16:9"
    # Not in fal's types of 2026-08-02; fal's page says the endpoint takes "reference
    # images to lock in subject and style" (2026-12-04), and the page wins.
    reference_image_urls: list[ImageRef] | None = None

    def violations(self) -> Iterator[Violation]:
        """HDR text-to-video is 5 s only (rule t2v-hdr-5s)."""
        yield from super().violations()
        if self.hdr and self.duration != "5s":
            yield "hdr", f"HDR is only available for 5s clips (got duration {self.duration})"


class ImageToVideoInput(GeneratedVideoInput):
    """``luma/agent/ray/v3.2/image-to-video``: animate a start frame (optionally to an end
    frame), or follow 1-64 keyframes pinned at output frames."""

    image_url: ImageRef | None = None
    end_image_url: ImageRef | None = None
    keyframes: Keyframes | None = None
    keyframe_indexes: list[NonNegativeInt] | None = None
    aspect_ratio: I2VAspect = "16:9"

    def violations(self) -> Iterator[Violation]:
        """One anchoring mode: a start (and end) frame, or keyframes; 10 s needs keyframes;
        a loop has no end frame and no keyframes (rules i2v-*, keyframe-indexes-pair)."""
        yield from super().violations()
        if self.keyframes:
            if self.image_url is not None or self.end_image_url is not None:
                yield (
                    "keyframes",
                    "keyframes cannot be combined with image_url or end_image_url",
                )
            if self.loop:
                yield "loop", "a loop cannot use keyframes"
            last = FRAMES_PER_SECOND * int(self.duration.removesuffix("s"))
            yield from keyframe_violations(self.keyframes, self.keyframe_indexes, last)
        else:
            if self.image_url is None:
                yield "image_url", "required: a start frame (image_url) or keyframes"
            if self.keyframe_indexes:
                yield from keyframe_violations(self.keyframes, self.keyframe_indexes)
            if self.duration != "5s":
                yield (
                    "duration",
                    f"image-to-video from a start/end frame makes 5s clips only (got"
                    f" {self.duration}); 10s needs keyframes",
                )
        if self.loop and self.end_image_url is not None:
            yield "loop", "a loop cannot have an end frame (end_image_url)"


class SourcePosition(Ruled):
    """Where the source sits in the reframed canvas, as fractions of the output."""

    x_norm: Annotated[float, Field(ge=0.0, le=1.0)]
    y_norm: Annotated[float, Field(ge=0.0, le=1.0)]
    w_norm: Fraction
    h_norm: Fraction

    def violations(self) -> Iterator[Violation]:
        """The rectangle must lie inside the canvas (rule reframe-source-inside)."""
        yield from super().violations()
        if self.x_norm + self.w_norm > 1.0:
            yield "w_norm", f"x_norm + w_norm must be at most 1 (got {self.x_norm + self.w_norm:g})"
        if self.y_norm + self.h_norm > 1.0:
            yield "h_norm", f"y_norm + h_norm must be at most 1 (got {self.y_norm + self.h_norm:g})"


class ReframeInput(RayInput):
    """``luma/agent/ray/v3.2/reframe``: outpaint a clip to a new aspect ratio."""

    video_url: VideoRef
    aspect_ratio: VideoAspect
    source_position: SourcePosition | None = None
    duration: Annotated[
        None,
        unavailable("reframe has no duration: the output follows the source's length"),
    ] = None
    hdr: Annotated[None, unavailable("HDR is not available for reframe")] = None
    exr_export: Annotated[None, unavailable("EXR export is not available for reframe")] = None
    loop: Annotated[None, unavailable("loop is not available for reframe")] = None

    def violations(self) -> Iterator[Violation]:
        """No 1080p for vertical canvases (rule reframe-1080p-vertical)."""
        yield from super().violations()
        if self.resolution == "1080p" and self.aspect_ratio in ("9:16", "3:4"):
            yield "resolution", f"1080p is not available for {self.aspect_ratio} reframes"


class UniInput(LumaInput):
    """A Uni-1 image: style, output format and reference images."""

    style: Literal["auto", "manga"] = "auto"
    output_format: Literal["png", "jpeg"] | None = None
    reference_image_urls: list[ImageRef] | None = None


class TextToImageInput(UniInput):
    """``luma/agent/uni-1/v1/text-to-image``: a still from a prompt."""

    aspect_ratio: ImageAspect | None = None
    enable_web_search: bool = False


class EditImageInput(UniInput):
    """``luma/agent/uni-1/v1/edit``: rework a still from an instruction."""

    image_url: ImageRef


class File(BaseModel):
    """A file fal produced: where to fetch it and what fal says it is."""

    model_config = ConfigDict(extra="allow")

    url: str
    content_type: str | None = None
    file_name: str | None = None
    file_size: int | None = None


class VideoOutput(BaseModel):
    """A Ray 3.2 result: the MP4, and the EXR when ``exr_export`` was set."""

    model_config = ConfigDict(extra="allow")

    video: File
    exr_file: File | None = None


class ImageOutput(BaseModel):
    """A Uni-1 result: the generated image(s)."""

    model_config = ConfigDict(extra="allow")

    images: Annotated[list[File], Field(min_length=1)]
