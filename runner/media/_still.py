"""One frame of a clip as a picture file: look frames and chain continuity start from these."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
from av.video.frame import VideoFrame

from ._decode import Sampler, VideoSource
from ._errors import MediaError, media_errors
from ._picture import Upright, fit_size

Which = Literal["first", "last"] | float
StillFormat = Literal["png", "jpeg"]

# FFmpeg's scale from quantiser to its internal "lambda" (FF_QP2LAMBDA in avutil.h).
_QP2LAMBDA = 118
# JPEG quantiser 2 is the best quality FFmpeg's encoder offers short of lossless.
_JPEG_QUANTISER = 2


def extract_frame(
    src: Path,
    which: Which,
    dest: Path,
    *,
    max_size: int | None = None,
    fmt: StillFormat | None = None,
) -> Path:
    """Write one upright frame of ``src`` to ``dest``: the first, the last, or at a time.

    The picture's longer side is at most ``max_size``. ``fmt`` is PNG or JPEG (quality
    near lossless); by default it follows ``dest``'s extension, PNG when that says nothing.
    """
    chosen: StillFormat = fmt or ("jpeg" if dest.suffix.lower() in (".jpg", ".jpeg") else "png")
    with media_errors(src, dest), VideoSource(src) as source:
        rotation = source.rotation()
        picture = _pick(source, which)
        width, height = fit_size(
            picture.width,
            picture.height,
            rotation=rotation,
            aspect=source.stream.sample_aspect_ratio,
            long_side=max_size,
        )
        upright = Upright(rotation, width, height, "rgb24")(picture)
        pixel_format = "rgb24" if chosen == "png" else "yuvj444p"
        if chosen == "jpeg":
            upright = upright.reformat(format=pixel_format)
        encoder = av.CodecContext.create("png" if chosen == "png" else "mjpeg", "w")
        assert isinstance(encoder, av.VideoCodecContext)
        encoder.width, encoder.height, encoder.pix_fmt = width, height, pixel_format
        encoder.time_base = Fraction(1, 25)
        if chosen == "jpeg":
            encoder.qscale = True
            encoder.global_quality = _JPEG_QUANTISER * _QP2LAMBDA
        upright.pts = 0
        data = b"".join(
            bytes(packet) for packet in [*encoder.encode(upright), *encoder.encode(None)]
        )
        dest.write_bytes(data)
    return dest


def _pick(source: VideoSource, which: Which) -> VideoFrame:
    if which == "first":
        head = next(source.frames(), None)
        if head is None:
            raise MediaError(source.path, "no picture could be decoded from it")
        return head[1]
    if which == "last":
        tail = Fraction(max(0.0, (source.duration or 0.0) - 2.0))
        last: VideoFrame | None = None
        for _, frame in source.frames(tail):
            last = frame
        if last is None:
            raise MediaError(source.path, "no picture could be decoded near its end")
        return last
    moment = Fraction(which)
    if moment < 0 or (source.duration is not None and moment > source.duration):
        raise MediaError(source.path, f"has no frame at {float(moment):.3f} s")
    return Sampler(source.frames(moment), 1 / source.rate / 2).at(moment)
