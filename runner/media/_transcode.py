"""Re-encoding a span of a clip: constant frame rate, upright, scaled, H.264, in one pass.

Output frame ``j`` shows the source frame on screen at ``(first + j) / rate`` seconds, so a
variable or odd frame rate comes out constant with every moment where it was; frames are
decoded, converted and encoded one at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ._audio import AudioFeed
from ._decode import Sampler, VideoSource
from ._errors import MediaError
from ._h264 import Colours, Quality, add_h264, mp4_output
from ._picture import Upright, fit_size


@dataclass(frozen=True, slots=True)
class Span:
    """Frames ``first``..``first + frames - 1`` of a clip at a constant ``rate``."""

    first: int
    frames: int
    rate: int

    @property
    def start(self) -> Fraction:
        """Where the span starts in the source, in seconds."""
        return Fraction(self.first, self.rate)

    @property
    def end(self) -> Fraction:
        """Where the span ends in the source, in seconds."""
        return Fraction(self.first + self.frames, self.rate)


@dataclass(frozen=True, slots=True)
class Shape:
    """How big the output may be: its shorter and longer side at most (None: as is)."""

    short_side: int | None = None
    long_side: int | None = None

    def of(self, source: VideoSource, rotation: int) -> tuple[int, int]:
        """The upright output size for ``source``."""
        stream = source.stream
        return fit_size(
            stream.width,
            stream.height,
            rotation=rotation,
            aspect=stream.sample_aspect_ratio,
            short_side=self.short_side,
            long_side=self.long_side,
        )


def transcode(
    src: Path,
    dest: Path,
    span: Span,
    shape: Shape,
    quality: Quality,
    *,
    sound: bool = False,
    keyframe_seconds: float | None = None,
) -> tuple[int, int]:
    """Write ``span`` of ``src`` to ``dest`` as H.264 (and AAC sound); returns width, height.

    Raises ``MediaError`` when the source ends more than a frame before the span does.
    """
    with VideoSource(src) as source, mp4_output(dest) as out:
        rotation = source.rotation()
        width, height = shape.of(source, rotation)
        stream = add_h264(
            out,
            width,
            height,
            Fraction(span.rate),
            quality,
            keyframe_seconds=keyframe_seconds,
            colours=Colours.of(source.stream.codec_context),
        )
        audio = None
        if sound:
            audio = AudioFeed(src, out, span.start, span.end, transcode=not _aac(source))
        convert = Upright(rotation, width, height)
        step = Fraction(1, span.rate)
        sampler = Sampler(source.frames(span.start), step / 2)
        allowed = 1 / source.rate + step
        try:
            for index in range(span.frames):
                moment = span.start + index * step
                picture = sampler.at(moment)
                if sampler.overrun > allowed:
                    raise MediaError(
                        src,
                        f"its video ends at {float(moment - sampler.overrun):.2f} s, before"
                        f" {float(span.end):.2f} s (truncated?)",
                    )
                frame = convert(picture)
                # The decoder's time base came along: the encoder would rescale from it.
                frame.time_base, frame.pts = step, index
                if audio is not None:
                    audio.until(out, index * step)
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
            if audio is not None:
                audio.until(out, None)
        finally:
            if audio is not None:
                audio.close()
    return width, height


def _aac(source: VideoSource) -> bool:
    audio = source.container.streams.audio
    return bool(audio) and audio[0].codec_context.name == "aac"
