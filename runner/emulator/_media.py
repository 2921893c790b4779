"""PyAV in and out for the emulator: input files to RGB pictures, pictures to output files."""

from __future__ import annotations

import io
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
from av.video.reformatter import ColorPrimaries, ColorRange, Colorspace, ColorTrc, Interpolation

from ._canvas import Image, Size
from ._hdr import Linear, to_pq_bt2020

FPS = 24  # Ray 3.2's native frame rate
ImageFormat = Literal["png", "jpeg"]
PastEnd = Literal["loop", "hold"]


class RenderError(ValueError):
    """An input file the emulator cannot use: undecodable, or the wrong kind of media.

    The message starts with the argument's name, the way fal's error detail points at it.
    """


@contextmanager
def _opened(data: bytes, field: str) -> Iterator[Any]:
    """An open container with a video stream; FFmpeg failures become ``RenderError``."""
    try:
        with av.open(io.BytesIO(data)) as container:
            if not container.streams.video:
                raise RenderError(f"{field}: the file has no picture in it")
            yield container
    except av.FFmpegError as exc:
        raise RenderError(f"{field}: cannot decode the file: {exc.strerror}") from exc


def _is_still(container: Any) -> bool:
    """Whether FFmpeg read the file as a single picture (png_pipe, jpeg_pipe, image2...)."""
    name = str(container.format.name)
    return name.endswith("_pipe") or name == "image2"


@dataclass(frozen=True)
class VideoSource:
    """A decodable input clip, read again from its bytes for every pass over it."""

    field: str
    data: bytes
    size: Size
    seconds: float
    frame_time: float

    def _one_pass(self, size: Size) -> Iterator[tuple[float, Image]]:
        """Every frame once, at ``size``, with its time from the first frame."""
        with _opened(self.data, self.field) as container:
            stream = container.streams.video[0]
            start: float | None = None
            for index, frame in enumerate(container.decode(stream)):
                time = float(frame.time) if frame.time is not None else index * self.frame_time
                start = time if start is None else start
                picture = frame.to_ndarray(format="rgb24", width=size[0], height=size[1])
                yield time - start, np.asarray(picture, dtype=np.uint8)

    def _looped(self, size: Size) -> Iterator[tuple[float, Image]]:
        """The clip played end to end forever, with ever-growing times."""
        offset = 0.0
        while True:
            last: float | None = None
            for time, picture in self._one_pass(size):
                last = time
                yield offset + time, picture
            if last is None:
                raise RenderError(f"{self.field}: the video has no decodable frames")
            offset += last + self.frame_time

    def _held(self, size: Size) -> Iterator[tuple[float, Image]]:
        """The clip once, then its last frame for ever (at ever-growing times)."""
        last: tuple[float, Image] | None = None
        for last in self._one_pass(size):
            yield last
        if last is None:
            raise RenderError(f"{self.field}: the video has no decodable frames")
        time, picture = last
        while True:
            time += self.frame_time
            yield time, picture

    def frames(
        self, size: Size, count: int, fps: int = FPS, *, past_end: PastEnd = "loop"
    ) -> Iterator[Image]:
        """``count`` frames at ``fps`` and ``size``; past the clip's end, ``past_end`` says
        whether it plays again from its start (``loop``) or its last frame holds (``hold``).

        Each output frame shows the source frame on screen at that moment, so a 30 fps
        source keeps its speed at 24 fps. Decoding streams: memory stays one frame deep.
        """
        timeline = self._looped(size) if past_end == "loop" else self._held(size)
        _, current = next(timeline)
        upcoming = next(timeline)
        for index in range(count):
            # The epsilon keeps float rounding from showing a frame one tick late.
            while upcoming[0] <= index / fps + 1e-6:
                current = upcoming[1]
                upcoming = next(timeline)
            yield current


def open_video(data: bytes, field: str) -> VideoSource:
    """Check that ``data`` is a clip with a decodable first frame and describe it."""
    with _opened(data, field) as container:
        if _is_still(container):
            raise RenderError(f"{field}: expected a video, got a still image")
        stream = container.streams.video[0]
        first = next(container.decode(stream), None)
        if first is None:
            raise RenderError(f"{field}: the video has no decodable frames")
        rate = stream.average_rate or stream.guessed_rate
        frame_time = 1 / float(rate) if rate else 1 / FPS
        if container.duration:
            seconds = container.duration / av.time_base
        else:
            seconds = (stream.frames or 1) * frame_time
        return VideoSource(field, data, (first.width, first.height), float(seconds), frame_time)


def decode_image(data: bytes, field: str) -> Image:
    """The picture in an image file (PNG, JPEG, WebP, GIF...), as RGB."""
    with _opened(data, field) as container:
        if not _is_still(container) and container.format.name != "gif":
            raise RenderError(f"{field}: expected an image, got a video")
        frame = next(container.decode(video=0), None)
        if frame is None:
            raise RenderError(f"{field}: the image has no decodable picture")
        return np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)


@dataclass(frozen=True)
class _Signal:
    """How an output video's pixels are stored and labelled."""

    pix_fmt: str
    colorspace: Colorspace
    primaries: ColorPrimaries
    transfer: ColorTrc

    def frame(self, rgb: Image, size: Size) -> Any:
        """``rgb`` scaled to ``size`` and converted to this signal's YUV."""
        if self.transfer == ColorTrc.SMPTE2084:
            source = av.VideoFrame.from_ndarray(to_pq_bt2020(rgb), format="rgb48le")
        else:
            source = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        # Only the matrix is converted here: passing transfer/primaries to reformat would
        # make swscale tone-map a second time, so they are set as labels afterwards.
        frame = source.reformat(
            size[0],
            size[1],
            self.pix_fmt,
            dst_colorspace=self.colorspace,
            dst_color_range=ColorRange.MPEG,
            interpolation=Interpolation.BICUBIC,
        )
        frame.color_primaries = self.primaries
        frame.color_trc = self.transfer
        return frame

    def label(self, codec: Any) -> None:
        """Write the colour description into the encoder, hence the bitstream and the MP4."""
        codec.colorspace = self.colorspace
        codec.color_primaries = self.primaries
        codec.color_trc = self.transfer
        codec.color_range = ColorRange.MPEG


SDR = _Signal("yuv420p", Colorspace.ITU709, ColorPrimaries.BT709, ColorTrc.BT709)
HDR_PQ = _Signal("yuv420p10le", Colorspace.BT2020, ColorPrimaries.BT2020, ColorTrc.SMPTE2084)


def encode_video(frames: Iterable[Image], size: Size, *, hdr: bool = False) -> bytes:
    """An H.264 MP4 at 24 fps: 8-bit BT.709, or 10-bit BT.2020 PQ when ``hdr``.

    x264 "ultrafast" keeps a 2 s clip well under a second on two cores. The moov box is
    moved to the front ("faststart") so browsers start playing before the download ends,
    which FFmpeg can only do through a real file, hence the temporary directory.
    """
    signal = HDR_PQ if hdr else SDR
    with tempfile.TemporaryDirectory(prefix="raybatch-emulator-") as tmp:
        path = Path(tmp) / "output.mp4"
        with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
            stream = out.add_stream("libx264", rate=FPS, options={"preset": "ultrafast"})
            stream.width, stream.height = size
            stream.pix_fmt = signal.pix_fmt
            signal.label(stream.codec_context)
            for index, rgb in enumerate(frames):
                frame = signal.frame(rgb, size)
                frame.pts = index
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
        return path.read_bytes()


def _encode_still(codec_name: str, frame: Any, pix_fmt: str, options: dict[str, str]) -> bytes:
    """One picture through one of FFmpeg's image encoders."""
    codec: Any = av.CodecContext.create(codec_name, "w")  # a VideoCodecContext at run time
    codec.width, codec.height = frame.width, frame.height
    codec.pix_fmt = pix_fmt
    codec.options = options
    packets = [*codec.encode(frame.reformat(format=pix_fmt)), *codec.encode(None)]
    return b"".join(bytes(packet) for packet in packets)


def encode_image(rgb: Image, image_format: ImageFormat) -> bytes:
    """A PNG or a JPEG (quality about 90) of ``rgb``."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    if image_format == "jpeg":
        return _encode_still("mjpeg", frame, "yuvj420p", {"qscale": "3"})
    return _encode_still("png", frame, "rgb24", {})


def encode_exr(linear: Linear) -> bytes:
    """An OpenEXR file of scene-linear RGB: half floats, ZIP compression.

    Luma's EXRs use DWAB, which FFmpeg cannot write; ZIP is lossless and every reader
    takes it.
    """
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(linear), format="gbrpf32le")
    return _encode_still("exr", frame, "gbrpf32le", {"compression": "zip16", "format": "half"})
