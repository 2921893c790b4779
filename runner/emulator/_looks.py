"""Restyling for the emulator's edits: a "look" chosen from the prompt, at a strength.

A look is a colour matrix (the W3C filter-effects matrices: saturate, hue-rotate, sepia),
a tint, a tone curve, optional posterisation and softening. ``edit_strength`` maps to an
amount in (0, 1]: the adhere_* values blend part of the look in (a light filter), the
flex_* values most to all of it, and the reimagine_* values also flatten and soften the
picture into fewer tones, so that it reads as a different-looking world.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ._canvas import Image, blur

Matrix = NDArray[np.float32]

# Rec. 709 luma weights as rounded by the W3C filter-effects spec.
_LUMA = np.array([0.213, 0.715, 0.072], dtype=np.float32)
_IDENTITY = np.eye(3, dtype=np.float32)
# With no edit_strength (auto_controls, or Luma's unspecified default): a clear restyle.
MEDIUM = 0.7
_FAMILIES = {"adhere": 0.25, "flex": 0.55, "reimagine": 0.85}
_STEP = 0.075
# The look's colours are all there from this amount up (flex_3 and above)...
_FULL_COLOUR = 0.8
# ...and past it the picture is also posterised to as few as 5 levels and softened.
_STYLISE_LEVELS = (16, 5)
_STYLISE_SOFTEN = 0.004


def saturate(amount: float) -> Matrix:
    """W3C ``saturate``: 0 is greyscale, 1 unchanged, above 1 more vivid."""
    return (np.outer(np.ones(3), _LUMA) * (1 - amount) + _IDENTITY * amount).astype(np.float32)


def hue_rotate(degrees: float) -> Matrix:
    """W3C ``hue-rotate``: turn every hue around the grey axis, keeping luma roughly."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    grey = np.outer(np.ones(3), _LUMA)
    cosine = _IDENTITY - grey
    sine = np.array([[-0.213, -0.715, 0.928], [0.143, 0.140, -0.283], [-0.787, 0.715, 0.072]])
    return (grey + c * cosine + s * sine).astype(np.float32)


def gains(red: float, green: float, blue: float) -> Matrix:
    """Per-channel gains: the simplest white-balance shift."""
    return np.diag([red, green, blue]).astype(np.float32)


SEPIA = np.array(
    [[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float32
)


@dataclass(frozen=True)
class Look:
    """A restyle at full strength."""

    name: str
    matrix: Matrix
    tint: tuple[float, float, float] = (0.0, 0.0, 0.0)  # added after the matrix, 0-255 scale
    contrast: float = 0.0  # 0 = linear tone curve, 1 = a full S-curve
    levels: int = 0  # posterise to this many levels per channel; 0 = off
    soften: float = 0.0  # blur radius as a fraction of the picture's width


NOIR = Look("noir", saturate(0.0), contrast=1.0)
SEPIA_LOOK = Look("sepia", SEPIA, tint=(12, 4, -6), contrast=0.3)
NEON = Look("neon", hue_rotate(160) @ saturate(2.2), tint=(10, -20, 25), contrast=0.6)
WATERCOLOR = Look("watercolor", saturate(0.7), tint=(30, 30, 30), levels=5, soften=0.008)
WARM = Look("warm", gains(1.15, 1.0, 0.75) @ saturate(1.2), tint=(18, 6, -10), contrast=0.3)
COLD = Look("cold", gains(0.8, 0.97, 1.2) @ saturate(0.8), tint=(-8, 6, 28), contrast=0.2)

_LOOK_WORDS: tuple[tuple[Look, tuple[str, ...]], ...] = (
    (NOIR, ("noir", "black and white", "black-and-white", "b&w", "monochrome", "grayscale")),
    (SEPIA_LOOK, ("sepia", "vintage", "old", "retro", "antique", "faded", "1920s")),
    (NEON, ("neon", "cyberpunk", "night", "synthwave", "vaporwave", "glow")),
    (WATERCOLOR, ("watercolor", "watercolour", "painting", "painted", "pastel", "oil")),
    (WARM, ("warm", "sunset", "golden", "sunny", "autumn", "desert", "summer")),
    (COLD, ("cold", "winter", "ice", "icy", "snow", "frozen", "arctic", "moonlight")),
)
_BY_WORD = {word: look for look, words in _LOOK_WORDS for word in words}
# Longest first so "black and white" wins over any shorter word inside it.
_WORDS = re.compile(
    r"\b(" + "|".join(re.escape(w) for w in sorted(_BY_WORD, key=len, reverse=True)) + r")\b"
)


def choose_look(prompt: str) -> Look:
    """The look named by the prompt's first style word, else a hue turn fixed by its hash."""
    found = _WORDS.search(prompt.lower())
    if found:
        return _BY_WORD[found.group(1)]
    turn = 60 + int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big") % 240
    return Look(f"hue{turn}", hue_rotate(turn) @ saturate(1.4), contrast=0.3)


def strength(edit_strength: str | None) -> float:
    """How far an ``edit_strength`` value departs from the source, in (0, 1]."""
    family, _, level = (edit_strength or "").partition("_")
    if family not in _FAMILIES or level not in {"1", "2", "3"}:
        return MEDIUM
    return _FAMILIES[family] + _STEP * (int(level) - 1)


@dataclass(frozen=True)
class Grade:
    """A look compiled for one strength and picture width; call it on every frame."""

    matrix: Matrix
    tint: NDArray[np.float32]
    tone: NDArray[np.uint8]  # 256-entry table: tone curve and posterisation together
    radius: int

    def __call__(self, rgb: Image) -> Image:
        """The restyled picture."""
        mixed = rgb.reshape(-1, 3).astype(np.float32) @ self.matrix.T + self.tint
        toned = self.tone[np.clip(mixed, 0, 255).astype(np.uint8)]
        return blur(toned.reshape(rgb.shape), self.radius)


def compile_grade(look: Look, amount: float, width: int, *, soften: bool = True) -> Grade:
    """``look`` at ``amount`` (0 = untouched, 1 = strongest) for pictures this wide;
    ``soften=False`` leaves out the blur, so each output pixel depends on its input pixel
    only."""
    colour = min(1.0, amount / _FULL_COLOUR)
    stylise = max(0.0, (amount - _FULL_COLOUR) / (1 - _FULL_COLOUR))
    v = np.arange(256, dtype=np.float32) / 255
    s_curve = 0.5 - 0.5 * np.cos(np.pi * v)
    curve = v + look.contrast * colour * (s_curve - v)
    levels = 256
    if look.levels:
        # Weaker edits keep more levels instead of blending: a blend would show ghost steps.
        levels = min(levels, round(look.levels / max(colour, 1e-3)))
    if stylise:
        most, fewest = _STYLISE_LEVELS
        levels = min(levels, round(most + (fewest - most) * stylise))
    if levels < 256:
        curve = np.round(curve * (levels - 1)) / (levels - 1)
    return Grade(
        matrix=(_IDENTITY + colour * (look.matrix - _IDENTITY)).astype(np.float32),
        tint=(np.array(look.tint, dtype=np.float32) * colour).astype(np.float32),
        tone=np.clip(curve * 255 + 0.5, 0, 255).astype(np.uint8),
        radius=round((look.soften * colour + _STYLISE_SOFTEN * stylise) * width) if soften else 0,
    )
