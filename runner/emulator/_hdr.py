"""Colour science for the emulator's HDR outputs: SDR pixels re-graded to PQ and to ACES.

The emulator only has SDR pictures (its inputs and its own drawings), so an "HDR" output is
an inverse tone map: sRGB is linearised, its highlights are lifted above diffuse white, and
the result is expressed either as BT.2020 PQ code values (for the 10-bit MP4) or as
scene-linear ACES2065-1 (for the EXR frames, as Luma documents for its EXR export).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ._canvas import Image

Linear = NDArray[np.float32]

# BT.2408's reference level: diffuse (SDR) white sits at 203 cd/m² inside a PQ signal.
SDR_WHITE_NITS = 203.0
PQ_PEAK_NITS = 10000.0
# How far the brightest SDR pixels are pushed past diffuse white (1 + 3 = 4x, ~800 nits):
# enough that a viewer sees real HDR highlights, not an SDR clip in an HDR wrapper.
HIGHLIGHT_GAIN = 3.0

BT709_TO_BT2020 = np.array(
    [[0.6274, 0.3293, 0.0433], [0.0691, 0.9195, 0.0114], [0.0164, 0.0880, 0.8956]],
    dtype=np.float32,
)
# sRGB/BT.709 (D65) to ACES2065-1 AP0 (D60), Bradford-adapted, as published by the ACES project.
BT709_TO_AP0 = np.array(
    [
        [0.4397010, 0.3829780, 0.1773350],
        [0.0897923, 0.8134230, 0.0967616],
        [0.0175440, 0.1115440, 0.8707040],
    ],
    dtype=np.float32,
)


def _scene_linear_table() -> Linear:
    """BT.709 linear light for every 8-bit sRGB code value, SDR white at 1.0 and the
    highlights expanded above it (a table: one lookup per pixel instead of the maths)."""
    v = np.arange(256, dtype=np.float32) / 255
    linear = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    return (linear * (1 + HIGHLIGHT_GAIN * linear**4)).astype(np.float32)


_SCENE_LINEAR = _scene_linear_table()


def _to_primaries(rgb: Image, matrix: NDArray[np.float32]) -> Linear:
    """Scene-linear light of ``rgb`` expressed in another set of primaries."""
    flat = _SCENE_LINEAR[rgb].reshape(-1, 3) @ matrix.T
    return flat.reshape(rgb.shape).astype(np.float32)


def pq_encode(nits: Linear) -> Linear:
    """SMPTE ST 2084 inverse EOTF: absolute luminance in cd/m² to a [0, 1] signal."""
    m1, m2 = 2610 / 16384, 2523 / 4096 * 128
    c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
    y = np.clip(nits / PQ_PEAK_NITS, 0, 1) ** m1
    signal: Linear = (((c1 + c2 * y) / (1 + c3 * y)) ** m2).astype(np.float32)
    return signal


def to_pq_bt2020(rgb: Image) -> NDArray[np.uint16]:
    """An 8-bit sRGB picture as 16-bit BT.2020 PQ RGB, ready for a 10-bit HDR encoder."""
    bt2020 = _to_primaries(rgb, BT709_TO_BT2020)
    return np.round(pq_encode(bt2020 * SDR_WHITE_NITS) * 65535).astype(np.uint16)


def to_aces(rgb: Image) -> Linear:
    """An 8-bit sRGB picture as scene-linear ACES2065-1 (AP0) floats, as an EXR frame holds."""
    return _to_primaries(rgb, BT709_TO_AP0)
