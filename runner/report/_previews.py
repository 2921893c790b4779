"""What the review page shows in place of a file: a poster (a JPEG of an early frame) for
every video, extracted once per content into ``.review/posters/``; and for a source a
browser cannot play (ProRes, HEVC, 10-bit H.264...) an H.264 proxy, made once per content
into ``.review/proxies/`` and shown instead of the source.

Both are named by the file's sha256, so they are never stale and never made twice;
which sources play as they are is remembered beside the proxies (``playable.json``), so a
source's headers are read once. Making a proxy transcodes the whole clip: the caller
bounds how many one page refresh may make, and how many sources it may look at
(``raybatch report`` does them all).
"""

from __future__ import annotations

import contextlib
import json
import os
import types
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path, PurePosixPath

from .._lazy import import_module

#: Where posters go, relative to the output directory.
POSTER_DIR = PurePosixPath(".review/posters")
#: Posters are for thumbnails: no wider than this.
POSTER_WIDTH = 480
#: Where proxies go, relative to the output directory.
PROXY_DIR = PurePosixPath(".review/proxies")
#: Proxies are for review: no taller (shorter side) than this.
PROXY_HEIGHT = 540
#: What every current browser plays in an MP4, MOV or WebM: H.264, VP8, VP9 and AV1 at
#: 8-bit 4:2:0 (HEVC plays in Safari and some Edge builds only; ProRes nowhere).
PLAYABLE_CODECS = frozenset({"h264", "vp8", "vp9", "av1"})
PLAYABLE_PIXELS = frozenset({"yuv420p", "yuvj420p"})
_VERDICTS = "playable.json"


def _pyav() -> types.ModuleType:
    # PyAV (18 MB) is imported by the first poster or look, not by every page refresh; in
    # threads (posters, the review server's pages), so one at a time (see ``_lazy``).
    return import_module("av")


def poster_name(sha256: str) -> str:
    """The poster file of the video with this sha256."""
    return f"{sha256[:32]}.jpg"


def extract_poster(video: Path, target: Path, *, width: int = POSTER_WIDTH) -> bool:
    """Write a JPEG of a frame early in ``video`` to ``target``; False if it cannot be read.

    The frame is taken a little way in (a fifth of the clip, at most 2 s): first frames are
    often black or a fade.
    """
    av = _pyav()
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


def playable(video: Path) -> bool:
    """Whether browsers play ``video`` as it is, from its headers alone (one that cannot
    be read counts as playable: no proxy could be made of it either)."""
    av = _pyav()
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            codec, pixels = stream.codec_context.name, stream.codec_context.pix_fmt
    except (av.FFmpegError, IndexError, OSError, ValueError):
        return True
    return codec in PLAYABLE_CODECS and (pixels is None or pixels in PLAYABLE_PIXELS)


def source_proxies(
    root: Path, videos: dict[str, Path], *, limit: int | None, probes: int | None = None
) -> dict[str, str | None]:
    """sha256 → the proxy's path (relative to ``root``, the output directory) of each
    source video in ``videos`` (sha256 → path) that browsers cannot play; None for one
    whose proxy is not made yet (beyond ``limit`` new ones, or it failed). Sources that
    play as they are, and those not looked at yet (beyond ``probes`` new looks), are left
    out."""
    directory = root / PROXY_DIR
    verdicts = _read_verdicts(directory / _VERDICTS)
    known = dict(verdicts)
    found: dict[str, str | None] = {}
    made = looked = 0
    for sha, video in videos.items():
        if sha not in verdicts:
            if probes is not None and looked >= probes:
                continue
            looked += 1
            verdicts[sha] = playable(video)
        if verdicts[sha]:
            continue
        relative = PROXY_DIR / f"{sha[:32]}.mp4"
        target = root / relative
        found[sha] = str(relative) if target.is_file() else None
        if found[sha] is None and (limit is None or made < limit):
            made += 1
            found[sha] = str(relative) if _make(video, target) else None
    if verdicts != known:
        _write_json(directory / _VERDICTS, verdicts)
    return found


def _make(video: Path, target: Path) -> bool:
    """One proxy, written whole before it takes its name."""
    from ..media import MediaError, make_proxy  # transcoding loads numpy: only when asked

    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.stem + ".part.mp4")
    try:
        make_proxy(video, part, max_height=PROXY_HEIGHT)
    except MediaError:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        return False
    os.replace(part, target)
    return True


def _read_verdicts(path: Path) -> dict[str, bool]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): bool(v) for k, v in data.items()}


def _write_json(path: Path, data: dict[str, bool]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)
