"""The source's sound for a span of its video, fed into an MP4 beside the video being written.

Copied as it is when its codec can go in an MP4; otherwise (PCM from a camera's MOV, for
instance) decoded, cut to the sample and encoded as AAC. Packets are fed in time order as
the video advances, so the file is interleaved and nothing is held in memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.packet import Packet

from ._decode import first_video
from ._errors import media_errors

if TYPE_CHECKING:  # PyAV's Packet is generic only in its stubs
    AudioPacket = Packet[AudioStream]

#: Audio codecs FFmpeg's MP4 muxer takes as they are.
MP4_AUDIO = frozenset({"aac", "mp3", "alac", "ac3", "eac3", "opus", "flac"})
_AAC_BIT_RATE = 192_000


class AudioFeed:
    """The sound of ``src`` from ``start`` to ``end`` (seconds of its video), written to ``out``.

    Output time 0 is ``start``; the sound keeps its offset from the video, so what played
    at a frame plays at that frame again. A source without sound feeds nothing.
    """

    def __init__(
        self,
        src: Path,
        out: OutputContainer,
        start: Fraction,
        end: Fraction,
        *,
        transcode: bool = False,
    ) -> None:
        self.src = src
        self.container = av.open(os.fspath(src))
        self._start, self._end = start, end
        self.stream: AudioStream | None = None
        self.copied = False
        self._pending: tuple[Fraction, AudioPacket] | None = None
        self._packets: Iterator[tuple[Fraction, AudioPacket]] = iter(())
        if not self.container.streams.audio:
            return
        source = self.container.streams.audio[0]
        video = first_video(self.container)
        origin = Fraction(0)
        if video is not None and video.start_time is not None and video.time_base:
            origin = video.start_time * video.time_base
        self.copied = source.codec_context.name in MP4_AUDIO and not transcode
        if self.copied:
            self.stream = out.add_stream_from_template(source)
            self._packets = self._copy(source, origin)
        else:
            layout = source.layout.name if source.channels <= 2 else "stereo"
            rate = source.sample_rate or 48_000
            self.stream = out.add_stream("aac", rate=rate, layout=layout)
            self.stream.bit_rate = _AAC_BIT_RATE
            self._packets = self._encode(source, origin, rate, layout)
        with media_errors(src):
            self._pending = next(self._packets, None)

    def close(self) -> None:
        """Close the source file."""
        self.container.close()

    def until(self, out: OutputContainer, seconds: Fraction | None) -> None:
        """Write every sound packet that starts before output time ``seconds`` (None: all)."""
        while self._pending is not None and (seconds is None or self._pending[0] < seconds):
            out.mux(self._pending[1])
            with media_errors(self.src):
                self._pending = next(self._packets, None)

    def _copy(
        self, source: AudioStream, origin: Fraction
    ) -> Iterator[tuple[Fraction, AudioPacket]]:
        base = source.time_base or Fraction(1, source.sample_rate or 48_000)
        shift = round((self._start + origin) / base)
        assert self.stream is not None
        # Not clamped at zero: an encoder's priming packet has a negative time.
        self.container.seek(shift - round(1 / base), stream=source)
        # The packet just before the span goes too: a transform codec (AAC, MP3, Opus)
        # decodes each frame overlapped with the one before (the encoder's priming packet
        # at the start of a file is such a one), so without it the first moments of the
        # span would decode wrong or silent. Its time is negative, as is a first packet's
        # that starts before ``start``: the MP4 muxer writes an edit list that starts
        # playback at zero, sample-exact.
        preroll: tuple[Fraction, AudioPacket] | None = None
        for packet in self.container.demux(source):
            if packet.pts is None or packet.size == 0:
                continue
            begins = packet.pts * base - origin
            if begins >= self._end:
                return
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = self.stream
            if begins + (packet.duration or 0) * base <= self._start:
                preroll = (begins - self._start, packet)
                continue
            if preroll is not None:
                yield preroll
                preroll = None
            yield begins - self._start, packet

    def _encode(
        self, source: AudioStream, origin: Fraction, rate: int, layout: str
    ) -> Iterator[tuple[Fraction, AudioPacket]]:
        assert self.stream is not None
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        first = math.ceil(self._start * rate)
        last = math.ceil(self._end * rate)
        for frame in self.container.decode(source):
            if frame.pts is None or frame.time_base is None:
                continue
            begins = round((frame.pts * frame.time_base - origin) * rate)
            for converted in resampler.resample(frame):
                samples = converted.to_ndarray()
                low, high = max(first - begins, 0), min(last - begins, samples.shape[1])
                begins += samples.shape[1]
                if high <= low:
                    continue
                yield from self._encoded(
                    samples[:, low:high], begins - samples.shape[1] + low - first, rate, layout
                )
            if begins >= last:
                break
        for packet in self.stream.encode(None):
            yield Fraction(packet.pts or 0, rate), packet

    def _encoded(
        self, samples: np.ndarray, offset: int, rate: int, layout: str
    ) -> Iterator[tuple[Fraction, AudioPacket]]:
        assert self.stream is not None
        frame = AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = offset
        frame.time_base = Fraction(1, rate)
        for packet in self.stream.encode(frame):
            yield Fraction(packet.pts or 0, rate), packet
