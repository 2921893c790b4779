"""A footage folder as users have them, made at test time: good clips under Unicode names,
byte-identical copies, one stem under two extensions, and files that cannot be used.

Clips are tiny (64×36 H.264) so that making a library takes a fraction of a second; each
has its own colour, so no two are the same bytes unless copied on purpose.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

DATA = Path(__file__).resolve().parent / "data"


def write_clip(
    path: Path,
    seconds: float,
    colour: tuple[int, int, int],
    *,
    size: tuple[int, int] = (64, 36),
    fps: int = 24,
    rotation: int = 0,
    audio: bool = False,
    faststart: bool = True,
) -> Path:
    """A clip of ``seconds`` in one colour with a moving bar; ``rotation`` is the display
    rotation a player applies (counterclockwise degrees), ``audio`` adds a quiet tone;
    without ``faststart`` the index comes last (a cut file then has none)."""
    width, height = size
    frames = max(1, round(seconds * fps))
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        video = out.add_stream("libx264", rate=fps, options={"threads": "1"})
        assert isinstance(video, av.VideoStream)
        video.width, video.height = width, height
        video.pix_fmt = "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=48_000, layout="mono") if audio else None
        for index in range(frames):
            image = np.empty((height, width, 3), np.uint8)
            image[:] = colour
            image[:, index % width] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode())
        if isinstance(sound, av.AudioStream):
            samples = round(seconds * 48_000)
            tone = 0.1 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 48_000)
            for start in range(0, samples, 1024):
                chunk = tone[start : start + 1024].astype(np.float32)[None, :]
                piece = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                piece.sample_rate = 48_000
                piece.pts = start
                piece.time_base = Fraction(1, 48_000)
                out.mux(sound.encode(piece))
            out.mux(sound.encode())
    return path


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
    whole = write_clip(lib / "cut.mp4", 2, (90, 90, 90), faststart=False).read_bytes()
    (lib / "cut.mp4").write_bytes(whole[: len(whole) // 2])  # a truncated mp4, index lost
    shutil.copy(DATA / "long_clip.mp4", lib / "long.mp4")  # 12 s: over fal's 10 s
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
            "long.mp4": "12.0 s long; video-to-video accepts at most 10 s",
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
