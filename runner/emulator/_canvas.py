"""Pixel geometry for the emulator: output sizes, rectangles, resizing, blurring, compositing.

Pictures are ``(height, width, 3)`` uint8 RGB arrays throughout the emulator.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import Interpolation
from numpy.typing import NDArray

Image = NDArray[np.uint8]
Size = tuple[int, int]  # (width, height)


@dataclass(frozen=True)
class Rect:
    """A rectangle in pixels; it may reach past the canvas it is placed on."""

    x: int
    y: int
    width: int
    height: int


def even(value: float) -> int:
    """The nearest even integer of at least 2: yuv420p needs even frame sizes."""
    return max(2, 2 * round(value / 2))


def sized(short_side: int, ratio: float) -> Size:
    """The (width, height) with the given short side and width/height ratio."""
    if ratio >= 1:
        return even(short_side * ratio), even(short_side)
    return even(short_side), even(short_side / ratio)


def long_sized(long_side: int, ratio: float) -> Size:
    """The (width, height) with the given long side and width/height ratio."""
    if ratio >= 1:
        return even(long_side), even(long_side / ratio)
    return even(long_side * ratio), even(long_side)


def shrink_to(size: Size, limit: Size) -> Size:
    """``size`` scaled down, keeping its ratio, until it fits inside ``limit``."""
    scale = min(1.0, limit[0] / size[0], limit[1] / size[1])
    return even(size[0] * scale), even(size[1] * scale)


def contain(inner: tuple[float, float], outer: Size) -> Rect:
    """The largest rectangle of ``inner``'s ratio centred inside ``outer``."""
    scale = min(outer[0] / inner[0], outer[1] / inner[1])
    width, height = round(inner[0] * scale), round(inner[1] * scale)
    return Rect((outer[0] - width) // 2, (outer[1] - height) // 2, width, height)


def crop_window(image: Size, ratio: float, zoom: float, pan: tuple[float, float]) -> Rect:
    """A camera window of the given ratio inside ``image``: ``zoom`` >= 1 narrows it,
    ``pan`` in [-1, 1] on each axis slides it across the room that zoom leaves."""
    full = contain((ratio * 1000, 1000), image)
    width, height = max(1, round(full.width / zoom)), max(1, round(full.height / zoom))
    x = full.x + (full.width - width) * (1 + pan[0]) / 2
    y = full.y + (full.height - height) * (1 + pan[1]) / 2
    return Rect(round(x), round(y), width, height)


def resize(image: Image, size: Size) -> Image:
    """``image`` scaled to ``size`` by swscale (much faster than doing it in numpy)."""
    if image.shape[1] == size[0] and image.shape[0] == size[1]:
        return image
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
    out = frame.reformat(size[0], size[1], interpolation=Interpolation.BICUBIC)
    return np.asarray(out.to_ndarray(), dtype=np.uint8)


def crop(image: Image, rect: Rect) -> Image:
    """The part of ``image`` under ``rect`` (which must lie inside it)."""
    return image[rect.y : rect.y + rect.height, rect.x : rect.x + rect.width]


def cover(image: Image, size: Size) -> Image:
    """``image`` centre-cropped to ``size``'s ratio and scaled to fill it exactly."""
    window = crop_window((image.shape[1], image.shape[0]), size[0] / size[1], 1.0, (0.0, 0.0))
    return resize(crop(image, window), size)


def blur(image: Image, radius: int) -> Image:
    """A soft blur of about ``radius`` pixels: the picture shrunk and scaled back up.

    Two swscale passes cost a fraction of a millisecond where a numpy box blur costs
    several, and a rendered look needs softness, not an exact kernel.
    """
    if radius < 1:
        return image
    height, width = image.shape[:2]
    small = (max(1, round(width / (radius + 1))), max(1, round(height / (radius + 1))))
    return resize(resize(image, small), (width, height))


def mix(a: Image, b: Image, weight: float) -> Image:
    """``a`` blended towards ``b``: weight 0 is all ``a``, 1 is all ``b``."""
    if weight <= 0:
        return a
    if weight >= 1:
        return b
    blended = a.astype(np.float32) * (1 - weight) + b.astype(np.float32) * weight
    return (blended + 0.5).astype(np.uint8)


def paste(canvas: Image, image: Image, rect: Rect) -> Image:
    """``canvas`` with ``image`` scaled into ``rect``; parts outside the canvas are cut off."""
    height, width = canvas.shape[:2]
    x0, y0 = max(rect.x, 0), max(rect.y, 0)
    x1, y1 = min(rect.x + rect.width, width), min(rect.y + rect.height, height)
    if x1 <= x0 or y1 <= y0:
        return canvas
    scaled = resize(image, (rect.width, rect.height))
    out = canvas.copy()
    out[y0:y1, x0:x1] = scaled[y0 - rect.y : y1 - rect.y, x0 - rect.x : x1 - rect.x]
    return out
