"""Joining a clip's rendered segments back into one file, with the source's sound.

Output frame ``j`` is the moment ``T0 + j / rate`` of the source (``T0`` the first kept
moment, ``rate`` the parts' own frame rate) and comes from the segment that keeps that
moment. Each segment is kept from its first frame, so a part is either used whole or cut
short. When the parts share one encoding and every part's kept frames are the first ones
in its decode order (always, for a part used whole; for a part cut short, when no kept
frame needs a dropped one), their packets are copied one after the other: no decoding,
many times real time. Otherwise (a cut inside a group of B-frames, a blend, parts that
differ) the whole is decoded and re-encoded at a visually lossless quality: re-encoding
only the part that needs it would put two encoders' parameter sets in one MP4 stream,
which players are not required to follow.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
from av.container import OutputContainer
from av.video.frame import VideoFrame

from ._audio import AudioFeed
from ._decode import Sampler, VideoSource
from ._errors import MediaError, media_errors
from ._h264 import STITCH, Colours, add_h264, mp4_output
from ._picture import Upright, blend
from ._segments import Segment


@dataclass(frozen=True, slots=True)
class StitchInfo:
    """What ``stitch`` wrote."""

    path: Path
    frames: int
    rate: Fraction
    width: int
    height: int
    #: False when the parts' packets were copied as they are.
    reencoded: bool
    #: How the source's sound went in: copied, encoded as AAC, or not at all.
    audio: Literal["copied", "aac"] | None

    @property
    def duration(self) -> float:
        """The video's length in seconds."""
        return float(self.frames / self.rate)


@dataclass(frozen=True, slots=True)
class _Part:
    path: Path
    segment: Segment
    first: int  # first output frame it gives
    end: int  # one past its last output frame


@dataclass(frozen=True, slots=True)
class _Encoding:
    codec: str
    width: int
    height: int
    pixel_format: str | None
    extradata: bytes
    rate: Fraction


def stitch(
    parts: Sequence[tuple[Path, Segment]],
    dest: Path,
    *,
    audio_from: Path | None = None,
    audio_range: tuple[float, float] | None = None,
    blend_overlaps: bool = False,
) -> StitchInfo:
    """Join rendered segments, in order, keeping exactly the frames each is meant to give.

    ``blend_overlaps`` mixes the first ``blend_frames`` of each segment linearly from the
    previous segment's rendering of the same moments; otherwise each segment's own are kept.
    ``audio_from``'s sound between ``audio_range`` (default: the kept span) is muxed in,
    copied when MP4 can hold it, else as AAC. Writes ``dest`` as it is named: the caller
    renames it into place.
    """
    if not parts:
        raise ValueError("nothing to stitch")
    for (_, earlier), (_, later) in zip(parts, parts[1:], strict=False):
        if later.keep_first != earlier.keep_end or later.rate != earlier.rate:
            raise ValueError(f"segment {later.index} does not follow segment {earlier.index}")
    first_path = parts[0][0]
    with media_errors(first_path, dest), VideoSource(first_path) as head:
        rate = head.rate
        width, height = head.stream.width, head.stream.height
        colours = Colours.of(head.stream.codec_context)
    segments = [segment for _, segment in parts]
    start = segments[0].at(segments[0].keep_first)
    end = segments[-1].at(segments[-1].keep_end)
    total = round((end - start) * rate)
    edges = [0] + [min(total, math.ceil((s.at(s.keep_first) - start) * rate)) for s in segments[1:]]
    placed = [
        _Part(path, segment, low, high)
        for (path, segment), low, high in zip(parts, edges, [*edges[1:], total], strict=True)
    ]
    sound = (
        (Fraction(audio_range[0]), Fraction(audio_range[1]))
        if audio_range is not None
        else (start, end)
    )
    blending = blend_overlaps and any(segment.blend_frames for segment in segments[1:])
    copyable = not blending and _copyable(placed, start, rate)
    feed = None
    # Whatever fails without a more precise culprit below (the muxer, the disk) names dest.
    with media_errors(dest, dest), mp4_output(dest) as out:
        try:
            if copyable:
                with media_errors(first_path, dest), VideoSource(first_path) as template:
                    stream = out.add_stream_from_template(template.stream)
            else:
                stream = add_h264(out, width, height, rate, STITCH, colours=colours)
            if audio_from is not None:
                with media_errors(audio_from, dest):
                    feed = AudioFeed(audio_from, out, *sound)
            if copyable:
                _remux(placed, out, stream, rate, feed, dest)
            else:
                _reencode(placed, out, stream, start, rate, blending, feed, dest)
            if feed is not None:
                feed.until(out, None)
        finally:
            if feed is not None:
                feed.close()
    audio: Literal["copied", "aac"] | None = None
    if feed is not None and feed.stream is not None:
        audio = "copied" if feed.copied else "aac"
    return StitchInfo(dest, total, rate, width, height, not copyable, audio)


def _encoding(source: VideoSource) -> _Encoding:
    context = source.stream.codec_context
    return _Encoding(
        context.name,
        source.stream.width,
        source.stream.height,
        context.pix_fmt,
        bytes(context.extradata or b""),
        source.rate,
    )


def _copyable(parts: list[_Part], start: Fraction, rate: Fraction) -> bool:
    """Whether each part's kept frames can be copied: one shared encoding, a clean cut.

    A part gives its frames from its first on. When it gives fewer than it holds, the
    ones it gives must come first in decode order too (no kept frame may need a dropped
    one): true of streams without reordered frames, and of cuts between groups of
    B-frames.
    """
    shared: _Encoding | None = None
    for part in parts:
        offset = (start + Fraction(part.first) / rate - part.segment.at(part.segment.first)) * rate
        if offset != 0:
            return False
        with media_errors(part.path), VideoSource(part.path) as source:
            encoding = _encoding(source)
            if shared is None:
                shared = encoding
            ticks = 1 / rate / source.base
            if encoding != shared or encoding.rate != rate or ticks.denominator != 1:
                return False
            decode_order = [
                packet.pts - source.origin
                for packet in source.container.demux(source.stream)
                if packet.pts is not None and packet.size
            ]
            wanted = part.end - part.first
            if sorted(decode_order) != [index * int(ticks) for index in range(len(decode_order))]:
                return False
            cut = wanted * int(ticks)
            kept = [time < cut for time in decode_order]
            if kept != [True] * wanted + [False] * (len(kept) - wanted):
                return False
    return True


def _remux(
    parts: list[_Part],
    out: OutputContainer,
    stream: av.video.stream.VideoStream,
    rate: Fraction,
    feed: AudioFeed | None,
    dest: Path,
) -> None:
    """Copy each part's kept packets, shifted to where the part starts in the output."""
    for part in parts:
        with media_errors(part.path, dest), VideoSource(part.path) as source:
            shift = int(Fraction(part.first) / rate / source.base) - source.origin
            cut = source.origin + int((part.end - part.first) / rate / source.base)
            for packet in source.container.demux(source.stream):
                if packet.pts is None or packet.size == 0:
                    continue
                if packet.pts >= cut:
                    break  # ``_copyable`` made sure nothing kept comes later
                packet.pts += shift
                if packet.dts is not None:
                    packet.dts += shift
                    if feed is not None:
                        feed.until(out, packet.dts * source.base)
                packet.stream = stream
                out.mux(packet)


def _reencode(
    parts: list[_Part],
    out: OutputContainer,
    stream: av.video.stream.VideoStream,
    start: Fraction,
    rate: Fraction,
    blending: bool,
    feed: AudioFeed | None,
    dest: Path,
) -> None:
    """Decode the parts, take each output frame from its part (mixed over blends), encode."""
    convert = Upright(0, stream.width, stream.height)
    step = 1 / rate
    for index, picture in enumerate(_pictures(parts, start, rate, blending, convert, dest)):
        # The decoder's time base came along: the encoder would rescale from it.
        picture.time_base, picture.pts = step, index
        if feed is not None:
            feed.until(out, index * step)
        out.mux(stream.encode(picture))
    out.mux(stream.encode())


class _Reader:
    """One part, open, sampled at output moments in its own time."""

    def __init__(self, part: _Part, rate: Fraction, dest: Path) -> None:
        self.part = part
        self.dest = dest
        with media_errors(part.path, dest):
            self.source = VideoSource(part.path)
            self.sampler = Sampler(self.source.frames(), 1 / rate / 2)
        self.allowed = 1 / self.source.rate + 1 / rate

    def at(self, moment: Fraction) -> VideoFrame:
        """The part's frame on screen at source moment ``moment``."""
        local = moment - self.part.segment.at(self.part.segment.first)
        with media_errors(self.part.path, self.dest):
            picture = self.sampler.at(local)
        if self.sampler.overrun > self.allowed:
            raise MediaError(
                self.part.path,
                f"ends at {float(local - self.sampler.overrun):.2f} s, but segment"
                f" {self.part.segment.index} needs {float(local):.2f} s",
            )
        return picture

    def close(self) -> None:
        """Close the part's file."""
        self.source.container.close()


def _pictures(
    parts: list[_Part],
    start: Fraction,
    rate: Fraction,
    blending: bool,
    convert: Upright,
    dest: Path,
) -> Iterator[VideoFrame]:
    """Every output frame in order; a part stays open through the next one's blend."""
    previous: _Reader | None = None
    reader: _Reader | None = None
    try:
        for part in parts:
            reader = _Reader(part, rate, dest)
            segment = part.segment
            mixed = blending and previous is not None and segment.blend_frames > 0
            if previous is not None and not mixed:
                previous.close()
                previous = None
            seam = segment.at(segment.keep_first)
            window = segment.at(segment.blend_frames)
            for index in range(part.first, part.end):
                moment = start + index / rate
                picture = convert(reader.at(moment))
                if previous is not None and moment < seam + window:
                    # 1/(n+1) .. n/(n+1): neither end of the blend is a plain copy.
                    weight = float((moment - seam + 1 / rate) / (window + 1 / rate))
                    picture = blend(convert(previous.at(moment)), picture, weight)
                yield picture
            if previous is not None:
                previous.close()
            previous, reader = reader, None
    finally:
        for left in (previous, reader):
            if left is not None:
                left.close()
