"""The emulator's output media: for each endpoint, its output JSON with real files in it.

``render(endpoint, arguments, fetch, seed=...)`` returns what fal would put in the
result, except that every file is a ``RenderedFile`` (bytes + content type + name) for
the app to store and replace with a URL. The media are real and made for the request:

- video-to-video decodes ``video_url`` and restyles it with a look named by the prompt
  (noir, sepia, neon, watercolor, warm, cold, else a hue turn from the prompt's hash) at a
  strength set by ``edit_strength``;
- text-to-video and text-to-image draw an abstract scene: palette from the prompt, layout
  and motion from the seed;
- image-to-video slowly zooms and pans over ``image_url`` and cross-fades to
  ``end_image_url``;
- reframe places the clip on the new canvas at ``source_position`` and fills the rest
  with a blurred, restyled copy of the frame, the way an outpaint continues the picture;
- uni-1 edit restyles ``image_url``; any other endpoint echoes its arguments in a JSON file.

``hdr`` makes a 10-bit BT.2020 PQ MP4 and ``exr_export`` adds a ZIP of OpenEXR frames.

Frame cap: videos are rendered at 24 fps for the requested duration, but at most
``max_frames`` frames (keyword), else ``$RAYBATCH_EMULATOR_MAX_FRAMES``, else 48 (2 s),
so that tests and demos stay fast on two cores; 0 (or less) lifts the cap. A bad
value in the variable raises ``ValueError`` on every render: it is a setup mistake.

``synthetic=True`` skips all media work for benchmarks: the output is ``{"video": file}``
whose bytes are pseudo-random (an MP4 signature, then noise) of
``arguments["_synthetic_bytes"]`` bytes, default 256 KiB, fixed by the seed and arguments.

The emulator is an independent witness of fal's behaviour: nothing here imports from the
runner outside ``runner.emulator``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ._canvas import (
    Image,
    Size,
    blur,
    cover,
    crop,
    crop_window,
    even,
    long_sized,
    mix,
    paste,
    resize,
    shrink_to,
    sized,
)
from ._hdr import to_aces
from ._media import FPS, RenderError, encode_exr, encode_image, encode_video
from ._request import Request, refuse
from ._synth import scene

__all__ = ["DEFAULT_MAX_FRAMES", "MAX_FRAMES_ENV", "RenderError", "RenderedFile", "render"]

DEFAULT_MAX_FRAMES = 48
MAX_FRAMES_ENV = "RAYBATCH_EMULATOR_MAX_FRAMES"
SYNTHETIC_BYTES = 262_144
DEFAULT_SECONDS = 5.0  # fal's shortest (and default) output slot
IMAGE_LONG_SIDE = 1024
# Made-up pictures are drawn at most this big, then scaled up: they are smooth gradients,
# so the upscale is invisible and drawing costs a sixteenth.
SKETCH_SIZE: Size = (320, 320)
FILL_STRENGTH = 0.25  # how strongly a reframe's prompt restyles the area it paints
MP4_SIGNATURE = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


@dataclass(frozen=True)
class RenderedFile:
    """One output file: its bytes and how fal would describe it."""

    data: bytes
    content_type: str
    file_name: str
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. width/height of an image


Renderer = Callable[[Request], dict[str, Any]]


def _frames_of(request: Request) -> int:
    """The frame count of a clip of the requested (or default) duration."""
    return request.frame_count(request.seconds(DEFAULT_SECONDS))


def _fade_in(
    frames: Iterable[Image], still: Image, weight: Callable[[int], float]
) -> Iterator[Image]:
    """``frames`` with ``still`` mixed into frame i at ``weight(i)``."""
    for index, frame in enumerate(frames):
        yield mix(frame, still, weight(index))


def _keep(frames: Iterable[Image], wanted: set[int], kept: dict[int, Image]) -> Iterator[Image]:
    """``frames`` unchanged, copying the ones at ``wanted`` indices into ``kept`` on the way."""
    for index, frame in enumerate(frames):
        if index in wanted:
            kept[index] = frame
        yield frame


def _exr_archive(stills: dict[int, Image], size: Size) -> RenderedFile:
    """A ZIP of OpenEXR frames (scene-linear ACES2065-1), one per kept frame."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for index, still in sorted(stills.items()):
            # A fixed timestamp keeps the archive's bytes the same for the same request.
            entry = zipfile.ZipInfo(f"frame_{index:05d}.exr", date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(entry, encode_exr(to_aces(resize(still, size))))
    return RenderedFile(buffer.getvalue(), "application/zip", "output_exr.zip")


def _video_output(
    request: Request, frames: Iterable[Image], size: Size, count: int
) -> dict[str, Any]:
    """``{"video", "exr_file"}`` for a clip of ``count`` frames, honouring hdr/exr_export."""
    hdr = request.flag("hdr")
    stills: dict[int, Image] = {}
    if hdr and request.flag("exr_export"):
        frames = _keep(frames, {0, count // 2, count - 1}, stills)
    video = RenderedFile(encode_video(frames, size, hdr=hdr), "video/mp4", "output.mp4")
    return {"video": video, "exr_file": _exr_archive(stills, size) if stills else None}


def _image_output(request: Request, picture: Image) -> dict[str, Any]:
    """``{"images": [file]}`` in the requested PNG or JPEG format."""
    image_format = request.image_format()
    height, width = picture.shape[:2]
    file = RenderedFile(
        encode_image(picture, image_format),
        f"image/{image_format}",
        f"output.{'jpg' if image_format == 'jpeg' else 'png'}",
        {"width": width, "height": height},
    )
    return {"images": [file]}


def text_to_video(request: Request) -> dict[str, Any]:
    """An animated scene from the prompt and seed, sized by aspect_ratio and resolution."""
    size = sized(request.short_side(), request.ratio(16 / 9))
    sketch = shrink_to(size, SKETCH_SIZE)
    drawing = scene(request.text("prompt"), request.seed)
    count = _frames_of(request)
    frames = (drawing.frame(index / FPS, sketch) for index in range(count))
    return _video_output(request, frames, size, count)


def image_to_video(request: Request) -> dict[str, Any]:
    """A slow zoom and pan over image_url (a Ken Burns move), fading into end_image_url."""
    start = request.image("image_url")
    if start is None:  # keyframe-only requests: animate a made-up first frame instead
        start = scene(request.text("prompt"), request.seed).frame(0, SKETCH_SIZE)
    source = (start.shape[1], start.shape[0])
    ratio = request.ratio(source[0] / source[1])
    size = sized(request.short_side(), ratio)
    work = shrink_to(size, source)
    count = _frames_of(request)
    rng = random.Random(request.seed)
    heading = (rng.uniform(-1, 1), rng.uniform(-1, 1))

    def shot(index: int) -> Image:
        progress = index / max(1, count - 1)
        pan = (heading[0] * progress, heading[1] * progress)
        return resize(crop(start, crop_window(source, ratio, 1 + 0.2 * progress, pan)), work)

    frames: Iterable[Image] = (shot(index) for index in range(count))
    end = request.image("end_image_url")
    if end is not None:
        # The last 40% of the clip cross-fades, landing exactly on the end frame.
        span = max(1.0, 0.4 * (count - 1))
        frames = _fade_in(frames, cover(end, work), lambda i: 1 - (count - 1 - i) / span)
    return _video_output(request, frames, size, count)


def video_to_video(request: Request) -> dict[str, Any]:
    """The source clip restyled by the prompt's look at edit_strength, looped to duration."""
    source = request.video("video_url")
    size = sized(request.short_side(), source.size[0] / source.size[1])
    # Restyle at no more than the source's own detail; the encoder scales up for free.
    work = shrink_to(size, source.size)
    grade = request.grade(work[0])
    count = _frames_of(request)
    frames: Iterable[Image] = (grade(frame) for frame in source.frames(work, count))
    start = request.image("start_image_url")
    if start is not None:
        # The given first frame dissolves into the edit over half a second.
        frames = _fade_in(frames, cover(start, work), lambda i: 1 - i / (FPS / 2))
    return _video_output(request, frames, size, count)


def reframe(request: Request) -> dict[str, Any]:
    """The clip placed on the new canvas, the exposed area filled from its own pixels."""
    source = request.video("video_url")
    canvas = sized(request.short_side(), request.ratio(16 / 9))
    placed = request.placement(canvas, source.size)
    # Compose no finer than the source's own detail; the encoder scales up for free.
    scale = min(1.0, source.size[0] / placed.width, source.size[1] / placed.height)
    work = (even(canvas[0] * scale), even(canvas[1] * scale))
    rect = request.placement(work, source.size)
    # The fill is worked out at an eighth of the size: it is blurred anyway. The prompt
    # tints it lightly, as the outpainted area is what the prompt describes.
    backdrop_size = (even(work[0] / 8), even(work[1] / 8))
    tint = request.grade(backdrop_size[0], amount=FILL_STRENGTH)

    def outpaint(frame: Image) -> Image:
        backdrop = resize(tint(blur(cover(frame, backdrop_size), 2)), work)
        return paste(backdrop, frame, rect)

    count = request.frame_count(request.seconds(source.seconds))
    frames = (outpaint(frame) for frame in source.frames((rect.width, rect.height), count))
    return {"video": _video_output(request, frames, canvas, count)["video"]}


def text_to_image(request: Request) -> dict[str, Any]:
    """A still of the prompt's scene, sized by aspect_ratio, as PNG or JPEG."""
    size = long_sized(IMAGE_LONG_SIDE, request.ratio(1.0))
    sketch = scene(request.text("prompt"), request.seed).frame(0, shrink_to(size, SKETCH_SIZE))
    return _image_output(request, resize(sketch, size))


def edit_image(request: Request) -> dict[str, Any]:
    """image_url restyled by the prompt's look, as PNG or JPEG."""
    picture = request.image("image_url")
    if picture is None:
        raise refuse("image_url", None, "an image URL")
    return _image_output(request, request.grade(picture.shape[1])(picture))


def _canonical(arguments: dict[str, Any]) -> bytes:
    """The arguments as canonical JSON, to hash them."""
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str).encode()


def echo(request: Request) -> dict[str, Any]:
    """For endpoints without a renderer: a summary and a small JSON file of the request."""
    arguments = dict(request.arguments)
    summary = {
        "endpoint": request.endpoint,
        "seed": request.seed,
        "keys": sorted(arguments),
        "sha256": hashlib.sha256(_canonical(arguments)).hexdigest(),
    }
    body = json.dumps({**summary, "arguments": arguments}, indent=2, sort_keys=True, default=str)
    return {"echo": summary, "file": RenderedFile(body.encode(), "application/json", "output.json")}


RENDERERS: dict[str, Renderer] = {
    "luma/agent/ray/v3.2/text-to-video": text_to_video,
    "luma/agent/ray/v3.2/image-to-video": image_to_video,
    "luma/agent/ray/v3.2/video-to-video": video_to_video,
    "luma/agent/ray/v3.2/reframe": reframe,
    "luma/agent/uni-1/v1/text-to-image": text_to_image,
    "luma/agent/uni-1/v1/edit": edit_image,
}


def frame_cap(max_frames: int | None = None) -> int:
    """The frame cap in force: the argument, else $RAYBATCH_EMULATOR_MAX_FRAMES, else 48."""
    if max_frames is not None:
        return max_frames
    value = os.environ.get(MAX_FRAMES_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_FRAMES
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{MAX_FRAMES_ENV} must be a whole number, got {value!r}") from None


def synthetic_file(arguments: dict[str, Any], seed: int) -> RenderedFile:
    """Stand-in video bytes for benchmarks: cheap, sized on request, same for same input."""
    size = arguments.get("_synthetic_bytes", SYNTHETIC_BYTES)
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise refuse("_synthetic_bytes", size, "a byte count")
    # One 4 KiB random block repeated: thousands of jobs cost microseconds each.
    key = hashlib.sha256(f"{seed}:".encode() + _canonical(arguments)).digest()
    block = random.Random(key).randbytes(4096)
    data = (MP4_SIGNATURE + block * (size // len(block) + 1))[:size]
    return RenderedFile(data, "video/mp4", "output.mp4")


def render(
    endpoint: str,
    arguments: dict[str, Any],
    fetch: Callable[[str], bytes],
    *,
    seed: int,
    synthetic: bool = False,
    max_frames: int | None = None,
) -> dict[str, Any]:
    """Return the endpoint's output JSON, every file in it a RenderedFile (maybe in lists).

    ``fetch(url)`` returns an input URL's bytes; its own exceptions pass through
    unchanged. Unusable input media (undecodable, or a picture where a clip belongs) and
    arguments that cannot be drawn raise ``RenderError``, whose message starts with the
    field's name. ``max_frames`` overrides the frame cap (see the module docstring).
    """
    if synthetic:
        return {"video": synthetic_file(arguments, seed)}
    request = Request(endpoint, arguments, fetch, seed, frame_cap(max_frames))
    return RENDERERS.get(endpoint, echo)(request)
