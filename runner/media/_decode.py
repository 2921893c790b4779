"""Reading a video one frame at a time, and picking the frame on screen at a given moment.

Times are exact fractions of a second from the video stream's own start, so a frame at
``n / rate`` is found exactly however the container rounds its timestamps.
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator, Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
from av.container import InputContainer
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from ._errors import MediaError

Timed = tuple[Fraction, VideoFrame]

#: Picture area a decoder's frame threads may work on at once: four 1080p frames. Each
#: frame thread keeps its own decoding context and pictures, about 12 MB at 1080p
#: (measured: a 540p segment cut from a 1080p H.264 clip grew RSS by 107 MB with 2
#: threads, 120 MB with FFmpeg's automatic 3 on 2 cores, 287 MB with 17, about what it picks
#: on 16 cores). Past a few threads the decoder outruns the x264 encoder fed from it.
_THREAD_PIXELS = 4 * 1920 * 1080
#: FFmpeg's own ceiling for its automatic count (MAX_AUTO_THREADS in libavcodec).
_MAX_THREADS = 16


def first_video(container: InputContainer) -> VideoStream | None:
    """The container's first real video stream (cover art in a music file does not count)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def video_duration(container: InputContainer, stream: VideoStream) -> float | None:
    """How long the video runs, in seconds: the stream's own length, else the container's."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def decode_threads(width: int, height: int) -> int:
    """Frame threads for decoding ``width`` × ``height`` pictures: one per usable core,
    as many as ``_THREAD_PIXELS`` allows (at least two, so 4K still decodes in parallel)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    fits = max(2, _THREAD_PIXELS // max(1, width * height))
    return max(1, min(cores or 1, _MAX_THREADS, fits))


def clockwise_rotation(counterclockwise: float) -> int:
    """FFmpeg's display-matrix angle (counterclockwise) as a clockwise quarter turn."""
    return int(round(-counterclockwise / 90)) * 90 % 360


class VideoSource:
    """An open video file: its first video stream, decoded in order with exact times."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.container = av.open(os.fspath(path))
        stream = first_video(self.container)
        if stream is None:
            self.container.close()
            raise MediaError(path, "has no video stream")
        # Frame threads: decoding is much of the work of every step that reads a clip. Not
        # FFmpeg's automatic count (a core's worth plus one, up to 16): memory grows with
        # each thread, and must not with the machine.
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = decode_threads(stream.width, stream.height)
        self.stream = stream
        self.base = stream.time_base or Fraction(1, 90000)
        self.origin = stream.start_time or 0
        self.rate = stream.average_rate or stream.guessed_rate or Fraction(24)
        self.duration = video_duration(self.container, stream)

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.container.close()

    def time_of(self, pts: int) -> Fraction:
        """A timestamp of the video stream in seconds from the stream's start."""
        return (pts - self.origin) * self.base

    def pts_at(self, seconds: Fraction) -> Fraction:
        """The (possibly fractional) timestamp of a moment given in seconds."""
        return seconds / self.base + self.origin

    def frames(self, start: Fraction = Fraction(0)) -> Iterator[Timed]:
        """Decoded frames with their times, from the last keyframe at or before ``start``."""
        # Always seek, also to zero: an earlier read may have moved the demuxer on.
        self.container.seek(math.floor(self.pts_at(start)), stream=self.stream)
        decoded = self._decode()
        head = next(decoded, None)
        if head is None or head[0] <= start or start <= 0:
            if head is not None:
                yield head
            yield from decoded
            return
        # Some containers seek to after the target (no index): read from the start.
        decoded.close()
        self.container.seek(self.origin, stream=self.stream)
        yield from self._decode()

    def _decode(self) -> Generator[Timed, None, None]:
        for frame in self.container.decode(self.stream):
            if frame.pts is not None:
                yield self.time_of(frame.pts), frame

    def rotation(self) -> int:
        """The clockwise display rotation, read from the first frame's display matrix."""
        head = next(self.frames(), None)
        if head is None:
            raise MediaError(self.path, "no picture could be decoded from it")
        return clockwise_rotation(head[1].rotation)


class Sampler:
    """Picks, for increasing moments, the frame on screen then.

    The frame on screen at ``t`` is the last one starting no later than ``t`` plus a
    tolerance (half a frame of the rate being sampled at), so that a timestamp rounded by
    the container still lands on its own frame. Before the first frame, the first is shown;
    after the last, the last stays on screen and ``overrun`` says by how much.
    """

    def __init__(self, frames: Iterator[Timed], tolerance: Fraction) -> None:
        self._frames = frames
        self._tolerance = tolerance
        self._current: Timed | None = None
        self._upcoming = next(frames, None)
        self.overrun = Fraction(0)

    def at(self, moment: Fraction) -> VideoFrame:
        """The frame on screen at ``moment``; raises EOFError if the video has no frame."""
        limit = moment + self._tolerance
        while self._upcoming is not None and self._upcoming[0] <= limit:
            self._current = self._upcoming
            self._upcoming = next(self._frames, None)
        chosen = self._current or self._upcoming
        if chosen is None:
            raise EOFError("no picture could be decoded from it")
        self.overrun = moment - chosen[0] if self._upcoming is None else Fraction(0)
        return chosen[1]
