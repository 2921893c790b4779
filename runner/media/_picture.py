"""Pictures as fal and browsers want them: upright, no bigger than asked, 8-bit 4:2:0."""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

import numpy as np
from av.video.frame import VideoFrame
from numpy.typing import NDArray

# Downscaling 4K to 1080p is where the scaler shows: Lanczos keeps fine texture sharp,
# which the model restyles, at a cost far below decoding the source.
_INTERPOLATION = "LANCZOS"
_SCALER_THREADS = 2


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def fit_size(
    width: int,
    height: int,
    *,
    rotation: int = 0,
    aspect: Fraction | None = None,
    short_side: int | None = None,
    long_side: int | None = None,
) -> tuple[int, int]:
    """The upright output size of a ``width`` × ``height`` stored picture, in even pixels.

    Turned by ``rotation`` (clockwise degrees), stretched to square pixels by the sample
    ``aspect`` ratio, then scaled down (never up) so the shorter side is at most
    ``short_side`` (540p, 720p, 1080p name the shorter side) and the longer at most
    ``long_side``.
    """
    shown_width = width * float(aspect) if aspect else float(width)
    shown_height = float(height)
    if rotation in (90, 270):
        shown_width, shown_height = shown_height, shown_width
    scale = 1.0
    if short_side is not None:
        scale = min(scale, short_side / min(shown_width, shown_height))
    if long_side is not None:
        scale = min(scale, long_side / max(shown_width, shown_height))
    return _even(shown_width * scale), _even(shown_height * scale)


class Upright:
    """Turns decoded frames into upright ``width`` × ``height`` frames of yuv420p or rgb24."""

    def __init__(
        self,
        rotation: int,
        width: int,
        height: int,
        pixel_format: Literal["yuv420p", "rgb24"] = "yuv420p",
    ) -> None:
        self.turns = rotation // 90 % 4
        self.width, self.height = width, height
        self.pixel_format = pixel_format
        # Scaled as stored, then turned: turning the smaller picture is cheaper.
        self._stored = (height, width) if self.turns % 2 else (width, height)

    def __call__(self, frame: VideoFrame) -> VideoFrame:
        """``frame`` scaled, converted and turned upright."""
        scaled = frame.reformat(
            *self._stored,
            format=self.pixel_format,
            interpolation=_INTERPOLATION,
            threads=_SCALER_THREADS,
        )
        if not self.turns:
            return scaled
        turned: NDArray[np.uint8]
        if self.pixel_format == "rgb24":
            turned = np.ascontiguousarray(np.rot90(scaled.to_ndarray(), -self.turns), np.uint8)
        else:
            turned = join_planes([np.rot90(plane, -self.turns) for plane in split_planes(scaled)])
        return VideoFrame.from_ndarray(turned, format=self.pixel_format)


def split_planes(frame: VideoFrame) -> list[np.ndarray]:
    """The Y, U and V planes of a yuv420p frame as arrays (views, no copy)."""
    width, height = frame.width, frame.height
    flat = frame.to_ndarray().reshape(-1)
    luma = width * height
    chroma = luma // 4
    return [
        flat[:luma].reshape(height, width),
        flat[luma : luma + chroma].reshape(height // 2, width // 2),
        flat[luma + chroma :].reshape(height // 2, width // 2),
    ]


def join_planes(planes: list[np.ndarray]) -> NDArray[np.uint8]:
    """Y, U and V planes packed the way ``VideoFrame.from_ndarray`` takes yuv420p."""
    height, width = planes[0].shape
    packed = np.concatenate([plane.reshape(-1) for plane in planes]).astype(np.uint8)
    return packed.reshape(height * 3 // 2, width)


def blend(earlier: VideoFrame, later: VideoFrame, weight: float) -> VideoFrame:
    """``later`` mixed over ``earlier`` at ``weight`` (0: all earlier, 1: all later)."""
    mixed = earlier.to_ndarray().astype(np.float32) * (1.0 - weight)
    mixed += later.to_ndarray().astype(np.float32) * weight
    return VideoFrame.from_ndarray(np.rint(mixed).astype(np.uint8), format="yuv420p")
