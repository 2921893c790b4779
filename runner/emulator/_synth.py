"""Pictures the emulator makes up: an animated abstract scene for a prompt and a seed.

The prompt fixes the palette and the seed fixes the composition and motion, the way a
generative model's output depends on both: the same pair always gives the same pixels.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import random
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ._canvas import Image, Size


@dataclass(frozen=True)
class Blob:
    """A soft disc drifting on a Lissajous path."""

    x: float
    y: float
    radius: float
    speed: float
    phase: float
    colour: int  # index into the scene's palette


@dataclass(frozen=True)
class Scene:
    """A rotating two-colour gradient with glowing discs moving over it."""

    palette: NDArray[np.float32]  # (4, 3), 0-255
    angle: float
    blobs: tuple[Blob, ...]

    def frame(self, seconds: float, size: Size) -> Image:
        """The scene at a moment, drawn at ``size``."""
        width, height = size
        # Both axes in units of the width, so that discs stay round at any aspect ratio.
        y, x = np.mgrid[0:height, 0:width].astype(np.float32) / width
        # Channel-first planes: numpy blends a colour into a plane far faster than into
        # (h, w, 3) pixels, whose inner axis of 3 defeats its vector loops.
        colours = self.palette[:, :, None, None]
        turn = self.angle + 0.35 * seconds
        ramp = np.clip(x * math.cos(turn) + y * math.sin(turn) + 0.25, 0, 1)
        image = colours[0] + ramp * (colours[1] - colours[0])
        for blob in self.blobs:
            cx = blob.x + 0.15 * math.sin(blob.speed * seconds + blob.phase)
            cy = (blob.y + 0.1 * math.cos(1.3 * blob.speed * seconds + blob.phase)) * height / width
            # Only the disc's bounding box is touched: most of the frame is outside it.
            x0, x1 = (max(0, min(width, round((cx + d * blob.radius) * width))) for d in (-1, 1))
            y0, y1 = (max(0, min(height, round((cy + d * blob.radius) * width))) for d in (-1, 1))
            distance = np.hypot(x[y0:y1, x0:x1] - cx, y[y0:y1, x0:x1] - cy)
            glow = np.clip(1 - distance / blob.radius, 0, 1) ** 1.5
            region = image[:, y0:y1, x0:x1]
            region += (colours[blob.colour] - region) * glow
        picture: Image = np.ascontiguousarray(
            np.clip(image, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        )
        return picture


def scene(prompt: str, seed: int) -> Scene:
    """The scene for a prompt and a seed."""
    digest = hashlib.sha256(prompt.encode()).digest()
    base = digest[0] / 255
    # Hues spread around the wheel from the prompt's hash, so prompts differ at a glance.
    hues = [(base + offset) % 1.0 for offset in (0.0, 0.12, 0.45, 0.6)]
    values = [0.35, 0.85, 1.0, 0.95]
    palette = np.array(
        [colorsys.hsv_to_rgb(h, 0.75, v) for h, v in zip(hues, values, strict=True)],
        dtype=np.float32,
    )
    rng = random.Random(seed)
    blobs = tuple(
        Blob(
            x=rng.uniform(0.1, 0.9),
            y=rng.uniform(0.15, 0.85),
            radius=rng.uniform(0.1, 0.3),
            speed=rng.uniform(0.8, 2.5),
            phase=rng.uniform(0, 2 * math.pi),
            colour=2 + i % 2,
        )
        for i in range(5)
    )
    return Scene(palette * 255, angle=digest[1] / 255 * 2 * math.pi, blobs=blobs)
