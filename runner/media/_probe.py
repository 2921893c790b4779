"""What a media file is, read with PyAV before anything is spent on it.

``probe`` reads the container's headers and decodes the first picture (the only way to
learn the display rotation, and proof that the file decodes at all). ``decode_problem`` is
the dearer check that the last frames decode too, which a truncated file fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from statistics import median

import av
from av.video.stream import VideoStream

from ._decode import clockwise_rotation, first_video, video_duration
from ._errors import MediaError, media_errors, reason_of
from ._files import (
    IMAGE_EXTENSIONS,
    MediaCache,
    MediaKind,
    ProbedKind,
    extension,
    file_identity,
    reference_problem,
)

# Checking a whole index for variable frame rate costs a Python object per frame: a two-hour
# clip is judged on this many frames at each of a few places instead.
_RATE_WINDOW = 2000
_RATE_WINDOWS = 5


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """What raybatch knows about one media file (or remote URL, as far as HTTP tells)."""

    kind: ProbedKind
    container: str
    codec: str | None
    width: int | None
    height: int | None
    duration: float | None
    frames: int | None
    size: int | None
    #: Degrees a player turns the stored picture clockwise to show it: 0, 90, 180 or 270.
    rotation: int = 0
    #: The average frame rate (frames per second).
    fps: float | None = None
    variable_frame_rate: bool = False
    pixel_format: str | None = None
    has_audio: bool = False
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None

    def fits(self, kind: MediaKind) -> bool:
        """Whether this file can stand where a ``kind`` is expected (a GIF serves as a still)."""
        return self.kind == kind or (kind == "image" and self.container == "gif")

    @property
    def upright_width(self) -> int | None:
        """The width a viewer sees, after the rotation."""
        return self.height if self.rotation in (90, 270) else self.width

    @property
    def upright_height(self) -> int | None:
        """The height a viewer sees, after the rotation."""
        return self.width if self.rotation in (90, 270) else self.height


def probe(path: Path, cache: MediaCache | None = None) -> MediaInfo:
    """Read ``path``'s headers and first picture: kind, format, codecs, size, timing, sound.

    Raises ``MediaError`` when the file is empty or cannot be opened as media at all. With
    a ``cache``, an unchanged file is not read again.
    """
    try:
        identity = file_identity(path)
    except OSError as exc:
        raise MediaError(path, reason_of(exc)) from None
    cached = cache.get("probe", identity) if cache is not None else None
    if cached is None:
        try:
            cached = _probe_file(identity.real, identity.size)
        except MediaError as exc:
            cached = exc
        if cache is not None:
            cache.put("probe", identity, cached)
    if isinstance(cached, MediaError):
        raise MediaError(path, cached.reason)
    assert isinstance(cached, MediaInfo)
    return cached


def _probe_file(path: Path, size: int) -> MediaInfo:
    if size == 0:
        raise MediaError(path, "is empty (0 bytes)")
    with media_errors(path), av.open(os.fspath(path)) as container:
        format_name = container.format.name
        stream = first_video(container)
        if stream is None:
            silent = MediaInfo("unknown", format_name, None, None, None, None, None, size)
            return _with_sound(silent, container)
        duration = video_duration(container, stream)
        frames = stream.frames or None
        moving = frames > 1 if frames else (duration or 0.0) > 0.0
        # An AVIF still arrives in an ISO-BMFF (mov) container and a GIF may hold one
        # frame or many: only the name and the motion tell a still from a clip.
        still = (
            format_name.endswith("_pipe")
            or format_name == "image2"
            or (extension(path.name) in IMAGE_EXTENSIONS and not moving)
        )
        # A header says little (a PNG signature over junk passes it); the first picture is
        # cheap to decode, a broken file would be paid for, and only a decoded frame carries
        # the display matrix.
        first = next(container.decode(stream), None)
        if first is None:
            raise MediaError(path, "no picture could be decoded from it")
        rate = stream.average_rate or stream.guessed_rate
        info = MediaInfo(
            "image" if still else "video",
            format_name,
            stream.codec_context.name,
            stream.width or None,
            stream.height or None,
            None if still else duration,
            frames,
            size,
            rotation=clockwise_rotation(first.rotation),
            fps=None if still or not rate else float(rate),
            variable_frame_rate=not still and variable_rate(stream),
            pixel_format=stream.codec_context.pix_fmt,
        )
        return _with_sound(info, container)


def _with_sound(info: MediaInfo, container: av.container.InputContainer) -> MediaInfo:
    if not container.streams.audio:
        return info
    audio = container.streams.audio[0].codec_context
    return replace(
        info,
        has_audio=True,
        audio_codec=audio.name,
        sample_rate=audio.sample_rate or None,
        channels=audio.channels or None,
    )


def variable_rate(stream: VideoStream) -> bool:
    """Whether the frames of ``stream`` are not evenly spaced in time.

    Reads the demuxer's index (every frame's timestamp, for MP4 and MOV) when it is
    complete; otherwise compares FFmpeg's average rate with its guessed base rate.
    """
    entries = stream.index_entries
    count = len(entries)
    if count < 3 or (stream.frames and count < stream.frames):
        average, base = stream.average_rate, stream.base_rate
        return bool(average and base and abs(average / base - 1) > Fraction(1, 100))
    starts = {0, count - _RATE_WINDOW}
    starts.update(count * part // _RATE_WINDOWS for part in range(1, _RATE_WINDOWS))
    steps: list[int] = []
    for start in sorted(max(0, start) for start in starts):
        window = [entry.timestamp for entry in entries[start : start + _RATE_WINDOW]]
        steps.extend(later - earlier for earlier, later in zip(window, window[1:], strict=False))
    typical = median(steps)
    # Timestamps rounded to the time base wobble by one tick in a constant-rate file.
    allowed = max(1.0, typical / 100)
    return any(abs(step - typical) > allowed for step in steps)


def decode_problem(path: Path) -> str | None:
    """Why ``path``'s video does not decode to its end (a truncated file), or None.

    Dearer than ``probe``: it reads the index for frames whose bytes lie past the end of
    the file (a "faststart" MP4 whose data was cut keeps a complete header) and decodes
    the last two seconds.
    """
    with media_errors(path), av.open(os.fspath(path)) as container:
        stream = first_video(container)
        if stream is None:
            return "has no video stream"
        end = video_duration(container, stream)
        base = stream.time_base or Fraction(1, 1)
        origin = stream.start_time or 0
        stops = _data_stops(container, os.path.getsize(path))
        if stops is not None:
            shown = f" of {end:.2f} s" if end else ""
            return f"is truncated: its data stops at {max(stops, 0.0):.2f} s{shown}"
        if not end:
            return None
        rate = stream.average_rate or stream.guessed_rate or Fraction(24)
        container.seek(int(max(0.0, end - 2.0) / base) + origin, stream=stream)
        last: float | None = None
        try:
            for packet in container.demux(stream):
                if packet.is_corrupt:
                    damaged = float(((packet.pts or origin) - origin) * base)
                    return f"is damaged near {damaged:.2f} s"
                for frame in packet.decode():
                    if frame.pts is not None:
                        last = float((frame.pts - origin) * base)
        except av.FFmpegError as exc:
            return f"does not decode to its end: {reason_of(exc)}"
        if last is None or last + 1.5 / float(rate) < end:
            reached = "no frame" if last is None else f"{last + 1 / float(rate):.2f} s"
            return f"decodes only to {reached} of {end:.2f} s (truncated?)"
        return None


def _data_stops(container: av.container.InputContainer, size: int) -> float | None:
    """The earliest moment whose bytes the index places past the end of the file, if any."""
    stops: list[float] = []
    for stream in (*container.streams.video, *container.streams.audio):
        base = stream.time_base or Fraction(1, 1)
        origin = stream.start_time or 0
        for entry in stream.index_entries:
            if entry.pos + entry.size > size:
                stops.append(float((entry.timestamp - origin) * base))
                break
    return min(stops, default=None)


def probe_remote(url: str, *, timeout: float = 10.0) -> MediaInfo:
    """What an HTTP HEAD says about a remote file: its kind (from Content-Type) and size.

    Used only when the user asks for ``--probe-remote``; planning never touches the network.
    Raises ``MediaError`` when the URL does not answer with a success status.
    """
    import httpx  # only the remote probe needs it; planning must not pay its import

    problem = reference_problem(url)
    if problem is not None:
        raise MediaError(Path(url), problem)
    if url.startswith("data:"):
        mime = url[5:].split(",", 1)[0].split(";", 1)[0]
        return MediaInfo(_kind_of_mime(mime), mime, None, None, None, None, None, None)
    try:
        response = httpx.head(url, follow_redirects=True, timeout=timeout)
    except httpx.HTTPError as exc:
        raise MediaError(Path(url), f"could not be reached: {exc}") from None
    if response.status_code >= 400:
        raise MediaError(Path(url), f"answered HTTP {response.status_code}")
    mime = response.headers.get("content-type", "").split(";", 1)[0].strip()
    length = response.headers.get("content-length")
    size = int(length) if length and length.isdigit() else None
    return MediaInfo(_kind_of_mime(mime), mime, None, None, None, None, None, size)


def _kind_of_mime(mime: str) -> ProbedKind:
    major = mime.split("/", 1)[0]
    return "video" if major == "video" else "image" if major == "image" else "unknown"
