"""A footage folder as users have them, made at test time: good clips under Unicode names,
byte-identical copies, one stem under two extensions, and files that cannot be used.

Clips are tiny (64×36 H.264, made by ``media_sources.make_clip``) so that making a library
takes a fraction of a second; each has its own colour, so no two are the same bytes unless
copied on purpose.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from .media_sources import Clip, make_clip

DATA = Path(__file__).resolve().parent / "data"


def write_clip(
    path: Path,
    seconds: float,
    colour: tuple[int, int, int],
    *,
    size: tuple[int, int] = (64, 36),
    rotation: int = 0,
    audio: bool = False,
) -> Path:
    """A 24 fps clip of ``seconds`` whose band has ``colour`` (see ``make_clip``);
    ``rotation`` is the display rotation (counterclockwise degrees), ``audio`` adds sound."""
    clip = Clip(
        frames=max(1, round(seconds * 24)),
        size=size,
        rotation=rotation,
        audio_codec="aac" if audio else None,
        colour=lambda _index: colour,
    )
    return make_clip(path, clip)


@dataclass(frozen=True)
class Library:
    """A library folder and what a plan of it must find."""

    root: Path  # holds library.yaml and lib/
    manifest: Path
    #: Files that cannot be used, by file name: the phrase the reason must hold.
    bad: dict[str, str]
    #: Ids of the clips that render, each with its file name.
    good: dict[str, str]
    #: Duplicate file name -> the file name whose bytes it holds.
    duplicates: dict[str, str]


def make_library(root: Path, *, on_bad_source: str | None = None) -> Library:
    """The library of issue 11: Unicode names, a copy, A001 twice, and broken files."""
    lib = root / "lib"
    lib.mkdir(parents=True)
    write_clip(lib / "東京.mp4", 2, (200, 40, 40))
    write_clip(lib / "大阪.mp4", 2, (40, 200, 40))
    write_clip(lib / "Café Night.mov", 2, (40, 40, 200))
    shutil.copy(lib / "東京.mp4", lib / "東京_copy.mp4")  # the same bytes under another name
    write_clip(lib / "A001.mov", 2, (200, 200, 40))
    write_clip(lib / "A001.mp4", 2, (40, 200, 200))  # same stem, other bytes
    (lib / "notes.mp4").write_text("shot list: 001 002 003\n")  # a .txt renamed .mp4
    whole = write_clip(lib / "cut.mp4", 2, (90, 90, 90)).read_bytes()
    (lib / "cut.mp4").write_bytes(whole[:600])  # a truncated mp4: cut inside its index
    shutil.copy(DATA / "long_clip.mp4", lib / "long.mp4")  # 12 s: over the 10 s cap below
    manifest = root / "library.yaml"
    lines = [
        "name: library",
        "endpoint: luma/agent/ray/v3.2/video-to-video",
        'output: "{clip}/{prompt}.mp4"',
        "defaults: {resolution: 540p, duration: 5s}",
        'clips: ["lib/*"]',
        "prompts:",
        '  noir: "film noir"',
        '  sepia: "faded sepia"',
        "segments: {max_source: 10s}",
    ]
    if on_bad_source is not None:
        lines.append(f"on_bad_source: {on_bad_source}")
    manifest.write_text("\n".join(lines) + "\n")
    return Library(
        root,
        manifest,
        bad={
            "notes.mp4": "could not be read as video",
            "cut.mp4": "could not be read as video",
            "long.mp4": "12 s long, over the longest clip raybatch cuts (10 s",
            "A001.mp4": "its id 'A001' is already lib/A001.mov's",
        },
        good={
            "東京": "東京.mp4",
            "大阪": "大阪.mp4",
            "Café_Night": "Café Night.mov",
            "A001": "A001.mov",
        },
        duplicates={"東京_copy.mp4": "東京.mp4"},
    )


def write_still(path: Path, width: int, height: int, colour: tuple[int, int, int]) -> Path:
    """A PNG of ``width`` × ``height`` in one colour."""
    codec = av.CodecContext.create("png", "w")
    assert isinstance(codec, av.VideoCodecContext)
    codec.width, codec.height, codec.pix_fmt = width, height, "rgb24"
    image = np.empty((height, width, 3), np.uint8)
    image[:] = colour
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    path.write_bytes(b"".join(bytes(p) for p in [*codec.encode(frame), *codec.encode(None)]))
    return path
