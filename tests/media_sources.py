"""Small generated media for the media tests: every frame shows its index, the sound clicks.

A frame's index is drawn as a Gray-coded 12-bit number, one white or dark block per bit in
a 4 × 3 grid over the top two thirds of the picture (one block changes from one frame to
the next, so the pattern alone never looks like a shot change); the bottom third is a band
of the frame's ``colour``. Blocks stay readable after scaling down to a few pixels and
after a visually lossless encode, so a test can tell which source frame ended up where.
The sound is a quiet tone with a full-scale click at chosen times, so a test can tell
where the source's audio landed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

COLUMNS, ROWS = 4, 3
BITS = COLUMNS * ROWS
SAMPLE_RATE = 48_000
Colour = tuple[int, int, int]


def _gray(value: int) -> int:
    return value ^ (value >> 1)


def _from_gray(value: int) -> int:
    result = 0
    while value:
        result ^= value
        value >>= 1
    return result


def index_image(index: int, width: int, height: int, colour: Colour = (200, 60, 30)) -> np.ndarray:
    """An RGB picture of ``width`` × ``height`` showing ``index`` as blocks over a band."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = colour
    grid_height = height * 2 // 3
    code = _gray(index)
    for bit in range(BITS):
        row, column = divmod(bit, COLUMNS)
        top, bottom = row * grid_height // ROWS, (row + 1) * grid_height // ROWS
        left, right = column * width // COLUMNS, (column + 1) * width // COLUMNS
        image[top:bottom, left:right] = 235 if code >> bit & 1 else 20
    return image


def read_index(image: np.ndarray) -> int:
    """The index an upright RGB picture made by ``index_image`` shows (any scale)."""
    height, width = image.shape[:2]
    grid_height = height * 2 // 3
    luma = image.mean(axis=2)
    code = 0
    for bit in range(BITS):
        row, column = divmod(bit, COLUMNS)
        y = (2 * row + 1) * grid_height // (2 * ROWS)
        x = (2 * column + 1) * width // (2 * COLUMNS)
        if luma[y, x] > 128:
            code |= 1 << bit
    return _from_gray(code)


def decoded(path: Path) -> Iterator[tuple[float, np.ndarray]]:
    """Every video frame of ``path`` as (time in seconds, RGB picture as stored)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            yield float(frame.time or 0.0), frame.to_ndarray(format="rgb24")


def read_indices(path: Path) -> list[int]:
    """The index each frame of ``path`` shows, in presentation order."""
    return [read_index(image) for _, image in decoded(path)]


def frame_times(path: Path) -> list[float]:
    """The presentation time of each video frame of ``path``, in seconds."""
    return [time for time, _ in decoded(path)]


def on_screen(times: Sequence[float], first: int, frames: int, rate: int) -> list[int]:
    """The source frame shown at each output frame of a resampling to ``rate`` (see Sampler)."""
    chosen = []
    for index in range(first, first + frames):
        limit = Fraction(index, rate) + Fraction(1, 2 * rate)
        shown = max((i for i, time in enumerate(times) if time <= limit + 1e-9), default=0)
        chosen.append(shown)
    return chosen


def click_times(path: Path, *, threshold: float = 0.5) -> list[float]:
    """When the clicks in ``path``'s first audio stream start, in seconds from zero."""
    found: list[float] = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        for frame in container.decode(stream):
            samples = np.abs(frame.to_ndarray()).max(axis=0)
            start = float(frame.time or 0.0)
            for offset in np.flatnonzero(samples > threshold):
                when = start + offset / frame.sample_rate
                if not found or when - found[-1] > 0.1:
                    found.append(when)
    return found


def tone(seconds: float, clicks: Sequence[float], rate: int = SAMPLE_RATE) -> np.ndarray:
    """A quiet 440 Hz tone of ``seconds`` with a 2 ms full-scale click at each time."""
    count = round(seconds * rate)
    signal = 0.1 * np.sin(2 * np.pi * 440 * np.arange(count) / rate)
    for when in clicks:
        start = round(when * rate)
        signal[start : start + rate // 500] = 0.95
    return signal.astype(np.float32)


@dataclass
class Clip:
    """How to make a test clip (see ``make_clip``)."""

    frames: int
    fps: Fraction = Fraction(24)
    size: tuple[int, int] = (160, 96)
    codec: str = "libx264"
    pix_fmt: str = "yuv420p"
    options: dict[str, str] = field(default_factory=dict)
    #: Display rotation in degrees counterclockwise (what ``VideoFrame.rotation`` reports).
    rotation: int = 0
    clicks: Sequence[float] = ()
    audio_codec: str | None = None
    #: Presentation time of each frame in seconds, for a variable frame rate.
    times: Sequence[float] | None = None
    colour: Callable[[int], Colour] = lambda index: (200, 60, 30)
    container_format: str | None = None
    #: Amplitude of random grain over the picture (new grain every frame): costs bytes.
    noise: int = 0
    #: The index each frame shows, when not its own position (a fake render shows source frames).
    shows: Callable[[int], int] | None = None


def make_clip(path: Path, clip: Clip) -> Path:
    """Encode ``clip`` into ``path``: frame i shows index i (or ``shows(i)``), upright."""
    width, height = clip.size
    turns = clip.rotation // 90 % 4
    coded = (height, width) if turns % 2 else (width, height)
    options = {"movflags": "+faststart"} if path.suffix in (".mp4", ".mov") else {}
    with av.open(str(path), "w", format=clip.container_format, options=options) as out:
        rate = clip.fps if clip.times is None else Fraction(1000)
        video = out.add_stream(clip.codec, rate=rate, options=clip.options)
        assert isinstance(video, av.VideoStream)
        video.width, video.height = coded
        video.pix_fmt = clip.pix_fmt
        if clip.times is not None:
            video.codec_context.time_base = Fraction(1, 1000)
        if turns:
            video.set_display_rotation(clip.rotation)
        audio: av.AudioStream | None = None
        if clip.audio_codec is not None:
            sound = out.add_stream(clip.audio_codec, rate=SAMPLE_RATE, layout="mono")
            assert isinstance(sound, av.AudioStream)
            audio = sound
        grain = np.random.default_rng(7)
        for index in range(clip.frames):
            shown = index if clip.shows is None else clip.shows(index)
            image = index_image(shown, width, height, clip.colour(index))
            if clip.noise:
                jitter = grain.integers(-clip.noise, clip.noise + 1, image.shape)
                image = np.clip(image.astype(np.int16) + jitter, 0, 255).astype(np.uint8)
            # The stored picture is turned the other way, so that a player turning it by
            # ``rotation`` shows it upright.
            frame = av.VideoFrame.from_ndarray(
                np.ascontiguousarray(np.rot90(image, -turns)), format="rgb24"
            )
            frame.pts = index if clip.times is None else round(clip.times[index] * 1000)
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if audio is not None:
            seconds = clip.frames / clip.fps if clip.times is None else clip.times[-1]
            _write_audio(out, audio, tone(float(seconds), clip.clicks))
    return path


def _write_audio(
    out: av.container.OutputContainer, stream: av.AudioStream, signal: np.ndarray
) -> None:
    chunk = 1024
    fmt = stream.codec_context.format.name if stream.codec_context.format else "fltp"
    for start in range(0, len(signal), chunk):
        samples = signal[start : start + chunk]
        data: np.ndarray
        if fmt.startswith("s16"):
            data = (samples * 32767).astype(np.int16)[None, :]
        elif fmt.startswith("s32"):
            data = (samples * 2147483647).astype(np.int32)[None, :]
        else:
            data = samples[None, :]
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode())
