"""Writing MP4 files of H.264 video: the one output format of every media step.

Quality is x264's constant rate factor. FFmpeg's H.264 guide (trac.ffmpeg.org/wiki/
Encode/H.264, read 2026-11) calls CRF 17-18 "visually lossless or nearly so": segments go
to fal at ``VISUALLY_LOSSLESS`` so the model restyles the source and not our artefacts, and
the stitched result is written at the same quality so the second generation adds nothing
visible. Review proxies only need to play: ``PROXY`` is x264's default CRF.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.container import OutputContainer
from av.video.codeccontext import VideoCodecContext
from av.video.stream import VideoStream

# "+faststart" moves the index to the front: a browser or fal's fetcher can start reading
# before the whole file has arrived.
_MP4_OPTIONS = {"movflags": "+faststart"}


@dataclass(frozen=True, slots=True)
class Quality:
    """An x264 rate factor (lower is better and bigger) and speed preset."""

    crf: int
    preset: str


#: Segments prepared for fal. "medium" (x264's default) over "fast": smaller uploads for
#: the same quality; a 10 s 1080p segment still encodes in seconds.
VISUALLY_LOSSLESS = Quality(17, "medium")
#: Re-encoded stitches: the same rate factor (x264 holds the quality a CRF names at any
#: preset; faster presets spend bytes, not quality), "veryfast" since a stitch may be an
#: hour of 1080p: 2.6 times less CPU than "fast" on 1080p renders (bench/media.py).
STITCH = Quality(17, "veryfast")
#: Review-page proxies.
PROXY = Quality(23, "veryfast")


@dataclass(frozen=True, slots=True)
class Colours:
    """A video's colour description, as FFmpeg's enumerations."""

    primaries: int
    transfer: int
    matrix: int

    @classmethod
    def of(cls, context: VideoCodecContext) -> Colours:
        """The colour description a decoder reports."""
        return cls(context.color_primaries, context.color_trc, context.colorspace)


def mp4_output(dest: Path) -> OutputContainer:
    """``dest`` opened for writing as a fast-start MP4, whatever its name ends with."""
    return av.open(os.fspath(dest), "w", format="mp4", options=dict(_MP4_OPTIONS))


def add_h264(
    out: OutputContainer,
    width: int,
    height: int,
    rate: Fraction,
    quality: Quality,
    *,
    keyframe_seconds: float | None = None,
    colours: Colours | None = None,
) -> VideoStream:
    """An H.264 yuv420p stream of constant ``rate``, frames numbered 0, 1, 2... as pts.

    ``colours`` describe the pictures that go in (the pixels keep the source's primaries,
    transfer and matrix): written into the stream so players show them the same.
    """
    options = {"crf": str(quality.crf), "preset": quality.preset}
    stream = out.add_stream("libx264", rate=rate, options=options)
    stream.width, stream.height = width, height
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = 1 / rate
    if keyframe_seconds is not None:
        stream.codec_context.gop_size = max(1, round(keyframe_seconds * rate))
    if colours is not None:
        context = stream.codec_context
        # 0 and 2 are FFmpeg's "reserved" and "unspecified": leave x264's default then.
        if colours.primaries not in (0, 2):
            context.color_primaries = colours.primaries
        if colours.transfer not in (0, 2):
            context.color_trc = colours.transfer
        if colours.matrix not in (0, 2):
            context.colorspace = colours.matrix
    return stream
