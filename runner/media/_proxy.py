"""Review-page copies of sources a browser cannot play (ProRes, HEVC, odd containers)."""

from __future__ import annotations

from pathlib import Path

from ._decode import VideoSource
from ._errors import MediaError, media_errors
from ._h264 import PROXY
from ._segments import planning_rate
from ._transcode import Shape, Span, transcode

#: Browsers play more, but a review proxy gains nothing from it.
_PROXY_MAX_RATE = 30
#: A keyframe every two seconds keeps scrubbing on the review page quick.
_KEYFRAME_SECONDS = 2.0


def make_proxy(src: Path, dest: Path, *, max_height: int = 540) -> Path:
    """Write an H.264/AAC fast-start MP4 of ``src`` that any browser plays, to ``dest``.

    Upright, at most ``max_height`` on its shorter side, at most 30 frames per second,
    with the source's sound (copied when it is AAC already).
    """
    with media_errors(src, dest):
        with VideoSource(src) as source:
            if not source.duration:
                raise MediaError(src, "has no known duration")
            rate = min(_PROXY_MAX_RATE, planning_rate(float(source.rate)))
            frames = max(1, round(source.duration * rate))
        transcode(
            src,
            dest,
            Span(0, frames, rate),
            Shape(short_side=max_height),
            PROXY,
            sound=True,
            keyframe_seconds=_KEYFRAME_SECONDS,
        )
    return dest
