"""The emulator's output media: for each endpoint, its output JSON with real files in it.

``render(endpoint, arguments, fetch, seed=...)`` returns what fal would put in the
result, except that every file is a ``RenderedFile`` (bytes + content type + name) for
the app to store and replace with a URL. The media are real and made for the request:

- video-to-video decodes ``video_url`` and restyles it with a look named by the prompt
  (noir, sepia, neon, watercolor, warm, cold, else a hue turn from the prompt's hash) at a
  strength set by ``edit_strength``. The restyle is a per-pixel colour transform (a matrix,
  a tint and a tone table; no blur) of the source frame on screen at the same moment, so
  the source's spatial structure survives and a test can read which source time a frame
  shows (a burnt-in counter stays readable). It renders the requested ``duration``; a
  source longer than that gives its first ``duration`` seconds (``v2v_long="first"``) or
  is refused (``"reject"``: 422 on ``video_url``); a shorter one holds its last frame to
  the end (``v2v_short="pad"``), plays again from its start (``"loop"``), keeps its own
  length (``"source"``, as Luma's native edit does) or is refused (``"reject"``). fal
  documents neither case (luma.md §2c and update 2026-12-04), so these are switches and a
  runner must not rely on them: it should send sources of exactly the requested length.
  Defaults: ``first`` (fal sells 5 s and 10 s slots; an output of the slot's length is the
  likeliest) and ``pad`` (the output still has the requested length, and every frame past
  the source's end is visibly the last one). ``start_image_url`` is the first frame
  exactly (scaled to cover the frame), dissolving into the edit over
  :data:`START_FADE_FRAMES` frames;
- text-to-video and text-to-image draw an abstract scene: palette from the prompt, layout
  and motion from the seed;
- image-to-video slowly zooms and pans over ``image_url`` and cross-fades to
  ``end_image_url``;
- reframe places the clip on the new canvas at ``source_position`` and fills the rest
  with a blurred, restyled copy of the frame, the way an outpaint continues the picture;
- uni-1 edit restyles ``image_url``; any other endpoint echoes its arguments in a JSON file.

``hdr`` makes a 10-bit BT.2020 PQ MP4 and ``exr_export`` adds a ZIP of OpenEXR frames.

Videos are H.264 MP4s at 24 fps (Ray 3.2's rate) for the requested duration, at the
requested resolution, with **no audio track** (Ray 3.2 returns silent video, luma.md
update 2026-12-04). x264's ultrafast preset keeps that cheap: 5 s at 540p renders in about
0.4 s on this 2-core machine, 10 s in 0.7 s. Their pictures are worked out no finer than
the source (or a 320 px sketch) and scaled up by the encoder. ``max_frames`` (keyword, for
unit tests of the renderer only) caps the frame count; None or 0 means no cap.

``realistic_sizes=True`` pads each video to about the size Ray 3.2's outputs have, for
transfer tests: :data:`REALISTIC_BITRATES` (no provider publishes output sizes, luma.md
§5d; these are typical H.264 delivery bitrates) times the duration, by appending an MP4
``free`` box of incompressible filler after the movie, which players skip.

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
from ._media import FPS, PastEnd, RenderError, encode_exr, encode_image, encode_video
from ._request import Request, refuse
from ._synth import scene
from .config import V2vLong, V2vShort

__all__ = ["REALISTIC_BITRATES", "RenderError", "RenderedFile", "render"]

SYNTHETIC_BYTES = 262_144
#: Bits per second of output video for ``realistic_sizes``, by the output's short side.
REALISTIC_BITRATES = {540: 5_000_000, 720: 8_000_000, 1080: 16_000_000}
#: Frames over which ``start_image_url`` dissolves into the edit (frame 0 is the image).
START_FADE_FRAMES = 6
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


def pad_to_realistic_size(mp4: bytes, size: Size, count: int, seed: int) -> bytes:
    """``mp4`` with a trailing ``free`` box making it about as big as a Ray 3.2 output."""
    short = min(size)
    bitrate = next((b for side, b in sorted(REALISTIC_BITRATES.items()) if short <= side), 0)
    bitrate = bitrate or REALISTIC_BITRATES[max(REALISTIC_BITRATES)]
    target = bitrate * count // FPS // 8
    filler = target - len(mp4) - 8
    if filler <= 0:
        return mp4
    block = random.Random(seed).randbytes(4096)
    body = (block * (filler // len(block) + 1))[:filler]
    return mp4 + (filler + 8).to_bytes(4, "big") + b"free" + body


def _video_output(
    request: Request, frames: Iterable[Image], size: Size, count: int
) -> dict[str, Any]:
    """``{"video", "exr_file"}`` for a clip of ``count`` frames, honouring hdr/exr_export."""
    hdr = request.flag("hdr")
    stills: dict[int, Image] = {}
    if hdr and request.flag("exr_export"):
        frames = _keep(frames, {0, count // 2, count - 1}, stills)
    data = encode_video(frames, size, hdr=hdr)
    if request.realistic_sizes:
        data = pad_to_realistic_size(data, size, count, request.seed)
    video = RenderedFile(data, "video/mp4", "output.mp4")
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
    """The source clip restyled per pixel by the prompt's look at edit_strength, for the
    requested duration (see the module docstring for sources of another length)."""
    source = request.video("video_url")
    size = sized(request.short_side(), source.size[0] / source.size[1])
    # Restyle at no more than the source's own detail; the encoder scales up for free.
    work = shrink_to(size, source.size)
    grade = request.grade(work[0], soften=False)
    seconds = request.seconds(DEFAULT_SECONDS)
    tolerance = source.frame_time  # container durations round to about a frame
    if source.seconds > seconds + tolerance and request.v2v_long == "reject":
        raise refuse_length(source.seconds, seconds)
    past_end: PastEnd = "loop" if request.v2v_short == "loop" else "hold"
    if source.seconds < seconds - tolerance:
        if request.v2v_short == "reject":
            raise refuse_length(source.seconds, seconds)
        if request.v2v_short == "source":
            seconds = source.seconds
    count = request.frame_count(seconds)
    frames: Iterable[Image] = (
        grade(frame) for frame in source.frames(work, count, past_end=past_end)
    )
    start = request.image("start_image_url")
    if start is not None:
        frames = _fade_in(frames, cover(start, work), lambda i: 1 - i / START_FADE_FRAMES)
    return _video_output(request, frames, size, count)


def refuse_length(source: float, wanted: float) -> RenderError:
    """The error for a source whose length the ``reject`` switches refuse."""
    return RenderError(
        f"video_url: the source is {source:.2f} s long and duration asks for {wanted:g} s;"
        " this emulator is set to refuse sources of another length"
    )


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
    v2v_long: V2vLong = "first",
    v2v_short: V2vShort = "pad",
    realistic_sizes: bool = False,
) -> dict[str, Any]:
    """Return the endpoint's output JSON, every file in it a RenderedFile (maybe in lists).

    ``fetch(url)`` returns an input URL's bytes; its own exceptions pass through
    unchanged. Unusable input media (undecodable, or a picture where a clip belongs) and
    arguments that cannot be drawn raise ``RenderError``, whose message starts with the
    field's name. ``max_frames``, ``v2v_long``, ``v2v_short`` and ``realistic_sizes``: see
    the module docstring.
    """
    if synthetic:
        return {"video": synthetic_file(arguments, seed)}
    request = Request(
        endpoint,
        arguments,
        fetch,
        seed,
        max_frames or 0,
        v2v_long=v2v_long,
        v2v_short=v2v_short,
        realistic_sizes=realistic_sizes,
    )
    return RENDERERS.get(endpoint, echo)(request)
