"""Generate the tiny media fixtures the tests read from ``tests/data``.

Run ``python tests/data/make_fixtures.py``; the output is deterministic, so re-running it
leaves git clean.

- ``long_clip.mp4``: 12 s of 64x36 H.264, longer than fal's 10 s source limit, a few KB.
- ``corrupt.mp4``: a real MP4 ``ftyp`` box followed by junk, so it sniffs as MP4 by its
  magic bytes but no demuxer can read it.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# The demo media script owns the one reproducible clip writer; fixtures reuse it.
sys.path.insert(0, str(HERE.parents[1] / "manifests" / "media"))

from make_media import grid, write_clip  # type: ignore[import-not-found]  # noqa: E402

FTYP = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


def long_clip(seconds: int = 12, fps: int = 24, width: int = 64, height: int = 36) -> None:
    """A sliding two-colour gradient, cheap to encode and to decode."""
    x, y = grid(width, height)
    frames = (
        np.stack([(x + i / fps / seconds) % 1.0 * 255, y * 255, 128 + 0 * x], -1).astype(np.uint8)
        for i in range(seconds * fps)
    )
    write_clip(HERE / "long_clip.mp4", frames, fps=fps, crf=40)


def corrupt_clip(size: int = 1024) -> None:
    """An MP4 signature with nothing decodable behind it."""
    junk = random.Random(0).randbytes(size - len(FTYP))
    (HERE / "corrupt.mp4").write_bytes(FTYP + junk)


def main() -> None:
    """Write every fixture beside this script."""
    long_clip()
    corrupt_clip()
    for name in ("long_clip.mp4", "corrupt.mp4"):
        print(f"{name:14} {(HERE / name).stat().st_size:>8,} bytes")


if __name__ == "__main__":
    main()
