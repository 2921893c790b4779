"""Preparing one segment for fal: exactly its frames, upright, constant rate, within a size.

The source's own packets are copied, byte for byte, when nothing needs changing: an H.264
yuv420p source at exactly the segment's rate, upright, no bigger than asked, whose segment
starts on an IDR frame and ends on one (or at the end), so the copied frames need nothing
outside the segment to decode. Anything else is re-encoded (``_transcode``) at a visually
lossless quality, and again at a higher CRF while the file is over the byte limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from av.video.stream import VideoStream

from ._decode import VideoSource
from ._errors import MediaError, media_errors
from ._h264 import VISUALLY_LOSSLESS, Quality, mp4_output
from ._segments import Segment
from ._transcode import Shape, Span, transcode

#: Beyond this rate factor the picture visibly degrades: better to fail and say so.
MAX_CRF = 35


@dataclass(frozen=True, slots=True)
class PreparedInfo:
    """A prepared segment file: its frames, size and how it was made."""

    path: Path
    frames: int
    rate: int
    width: int
    height: int
    size: int
    #: The source's packets were copied, nothing re-encoded.
    copied: bool
    #: The x264 rate factor it was encoded at (None when copied).
    crf: int | None


def cut_segment(
    src: Path,
    segment: Segment,
    dest: Path,
    *,
    max_height: int | None = None,
    max_size: int | None = None,
    max_bytes: int | None = None,
) -> PreparedInfo:
    """Write exactly ``segment``'s frames of ``src`` to ``dest`` as an MP4 ready for fal.

    ``max_height`` caps the shorter side (the "540p/720p/1080p" of the requested output),
    ``max_size`` the longer; ``max_bytes`` is the endpoint's file size limit. The result is
    upright, at the segment's constant rate, H.264 yuv420p, silent and fast-start.
    """
    span = Span(segment.first, segment.frames, segment.rate)
    shape = Shape(max_height, max_size)
    with media_errors(src, dest):
        with VideoSource(src) as source:
            rotation = source.rotation()
            width, height = shape.of(source, rotation)
            run = None
            if _unchanged(source.stream, segment.rate, rotation, width, height):
                run = _packet_run(source, span)
            if run is not None and (max_bytes is None or run <= max_bytes):
                _copy(source, span, dest)
                return PreparedInfo(
                    dest, span.frames, span.rate, width, height, dest.stat().st_size, True, None
                )
        crf = VISUALLY_LOSSLESS.crf
        while True:
            width, height = transcode(
                src, dest, span, shape, Quality(crf, VISUALLY_LOSSLESS.preset)
            )
            written = dest.stat().st_size
            if max_bytes is None or written <= max_bytes:
                return PreparedInfo(
                    dest, span.frames, span.rate, width, height, written, False, crf
                )
            if crf >= MAX_CRF:
                raise MediaError(
                    src,
                    f"segment {segment.index} ({float(span.start):.2f}-{float(span.end):.2f} s)"
                    f" is {written} bytes at CRF {crf}, over the limit of {max_bytes}",
                )
            # x264: +6 CRF is about half the size (FFmpeg's H.264 guide); one step more
            # than the estimate, since the estimate is rough.
            crf = min(MAX_CRF, crf + max(2, math.ceil(6 * math.log2(written / max_bytes)) + 1))


def _unchanged(stream: VideoStream, rate: int, rotation: int, width: int, height: int) -> bool:
    """Whether the segment could go out as the source's own packets."""
    context = stream.codec_context
    aspect = stream.sample_aspect_ratio
    return (
        context.name == "h264"
        and context.pix_fmt == "yuv420p"
        and rotation == 0
        and (stream.width, stream.height) == (width, height)
        and (not aspect or aspect == 1)
        and stream.average_rate == rate
        and (context.extradata or b"")[:1] == b"\x01"  # avcC: length-prefixed NAL units
    )


def _packet_run(source: VideoSource, span: Span) -> int | None:
    """The bytes of the segment's packets, when they can be copied on their own; else None.

    They can when the segment's first packet (in decode order) is an IDR frame at the
    segment's first moment, every packet up to the next IDR frame belongs to the segment
    and there is one per frame on the segment's time grid, and the next IDR frame is at the
    segment's end (or the file ends there).
    """
    ticks = Fraction(1, span.rate) / source.base
    start, end = source.pts_at(span.start), source.pts_at(span.end)
    if ticks.denominator != 1 or start.denominator != 1 or end.denominator != 1:
        return None
    nal_size = (source.stream.codec_context.extradata or b"\x00" * 5)[4] % 4 + 1
    source.container.seek(int(start), stream=source.stream)
    seen: set[int] = set()
    size = 0
    for packet in source.container.demux(source.stream):
        if packet.pts is None or packet.size == 0:
            continue
        if not seen and (packet.pts != start or not _idr(bytes(packet), nal_size)):
            return None
        if packet.pts >= end:
            if packet.pts == end and _idr(bytes(packet), nal_size):
                break
            return None
        if packet.pts < start or (packet.pts - start) % ticks or packet.pts in seen:
            return None
        seen.add(packet.pts)
        size += packet.size
    return size if len(seen) == span.frames else None


def _idr(data: bytes, nal_size: int) -> bool:
    """Whether an AVCC packet holds an IDR slice (NAL unit type 5)."""
    position = 0
    while position + nal_size < len(data):
        length = int.from_bytes(data[position : position + nal_size], "big")
        if data[position + nal_size] & 0x1F == 5:
            return True
        position += nal_size + length
    return False


def _copy(source: VideoSource, span: Span, dest: Path) -> None:
    """Remux the segment's packets into ``dest``, timed from zero."""
    start, end = int(source.pts_at(span.start)), int(source.pts_at(span.end))
    with mp4_output(dest) as out:
        stream = out.add_stream_from_template(source.stream)
        source.container.seek(start, stream=source.stream)
        for packet in source.container.demux(source.stream):
            if packet.pts is None or packet.size == 0:
                continue
            if packet.pts >= end:
                break
            packet.pts -= start
            if packet.dts is not None:
                packet.dts -= start
            packet.stream = stream
            out.mux(packet)
