"""Video posters for the review page: one JPEG per distinct video, named by its sha256
(so never stale), extracted once into ``<output_dir>/.review/posters/``, in parallel."""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path, PurePosixPath

import av

#: Where posters go, relative to the output directory.
POSTER_DIR = PurePosixPath(".review/posters")
#: Posters are for thumbnails: no wider than this.
POSTER_WIDTH = 480


def extract_poster(video: Path, target: Path, *, width: int = POSTER_WIDTH) -> bool:
    """Write a JPEG of a frame early in ``video`` to ``target``; False if it cannot be read.

    The frame is taken a little way in (a fifth of the clip, at most 2 s): first frames are
    often black or a fade.
    """
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            seconds = container.duration / 1_000_000 if container.duration else 0.0
            wanted = min(2.0, seconds / 5)
            frame = None
            for frame in container.decode(stream):
                if frame.time is None or frame.time >= wanted:
                    break
        if frame is None:
            return False
        w = min(width, frame.width) // 2 * 2
        h = max(2, round(frame.height * w / frame.width / 2) * 2)
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height, encoder.pix_fmt = w, h, "yuvj420p"
        encoder.time_base = Fraction(1, 25)
        encoder.options = {"qmin": "2", "qmax": "4"}
        image = frame.reformat(width=w, height=h, format="yuvj420p")
        data = b"".join(bytes(p) for p in [*encoder.encode(image), *encoder.encode(None)])
    except (av.FFmpegError, IndexError, OSError, ValueError):
        return False
    if not data:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return True


def poster_name(sha256: str) -> str:
    """The poster file of the video with this sha256."""
    return f"{sha256[:32]}.jpg"


def make_posters(
    root: Path, videos: Mapping[str, Path], limit: int | None = None
) -> dict[str, str]:
    """Posters of ``videos`` (sha256 → file) under ``root``: the ones already there, and
    at most ``limit`` (None: all) extracted now; sha256 → poster path relative to ``root``."""
    poster_dir = root / POSTER_DIR
    existing = set(os.listdir(poster_dir)) if poster_dir.is_dir() else set()
    found: dict[str, str] = {}
    todo: dict[str, Path] = {}
    for sha, video in videos.items():
        if not sha:
            continue
        if poster_name(sha) in existing:
            found[sha] = str(POSTER_DIR / poster_name(sha))
        elif video.is_file() and (limit is None or len(todo) < limit):
            todo[sha] = video

    def make(sha: str) -> tuple[str, bool]:
        return sha, extract_poster(todo[sha], poster_dir / poster_name(sha))

    if todo:
        # PyAV decodes without holding the GIL, so threads do run in parallel.
        with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 2)) as pool:
            for sha, ok in pool.map(make, todo):
                if ok:
                    found[sha] = str(POSTER_DIR / poster_name(sha))
    return found
