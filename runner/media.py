"""What raybatch knows about a media file before it spends money on it.

``probe`` reads a local clip's or still's container headers with PyAV (no decoding of the
whole file), ``local_file`` hashes its bytes once per process, and ``reference_problem``
decides which remote references may be sent to fal at all. Nothing here touches the
network except ``probe_remote``, which only runs when the user asks for it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import av

from runner.job import LocalFile

MediaKind = Literal["video", "image"]
ProbedKind = Literal["video", "image", "unknown"]

# The MIME type a file is uploaded with, by extension: the containers fal's upload widgets
# accept for Luma (mp4, mov, webm, m4v, gif for video; jpg, jpeg, png, webp, gif, avif for
# stills) plus the common spellings, so an unlisted extension is not silently mislabelled.
CONTENT_TYPES: dict[str, str] = {
    "mp4": "video/mp4",
    "m4v": "video/x-m4v",
    "mov": "video/quicktime",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "avi": "video/x-msvideo",
    "gif": "image/gif",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
}
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "gif", "avif", "bmp", "tif", "tiff"})

_HASH_CHUNK = 1 << 20
_REMOTE_SCHEMES = ("http", "https")


class MediaError(Exception):
    """A file could not be read as the media it claims to be; ``reason`` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True, slots=True)
class MediaInfo:
    """Header facts about one media file (or remote URL, as far as HTTP tells)."""

    kind: ProbedKind
    container: str
    codec: str | None
    width: int | None
    height: int | None
    duration: float | None
    frames: int | None
    size: int | None

    def fits(self, kind: MediaKind) -> bool:
        """Whether this file can stand where a ``kind`` is expected (a GIF serves as a still)."""
        return self.kind == kind or (kind == "image" and self.container == "gif")


def extension(name: str) -> str:
    """The lower-case extension of a file name or URL path, without the dot."""
    return name.rsplit("/", 1)[-1].rpartition(".")[2].lower() if "." in name else ""


def content_type(path: Path) -> str:
    """The MIME type ``path`` is uploaded with."""
    return CONTENT_TYPES.get(extension(path.name), "application/octet-stream")


def is_remote(reference: str) -> bool:
    """Whether a manifest reference names a URL (any scheme) rather than a local path."""
    return "://" in reference or reference.startswith("data:")


def reference_problem(reference: str) -> str | None:
    """Why a remote reference may not be sent to fal, or None when it may.

    Only http(s) URLs with a host and ``data:`` URIs travel: fal's workers cannot read the
    submitter's ``file://`` paths, and other schemes are not fetched at all.
    """
    if reference.startswith("data:"):
        return None if "," in reference else "a data: URI needs a ',' before its payload"
    scheme = urlsplit(reference).scheme.lower()
    if scheme == "file":
        return "file:// URLs are not accepted; give the local path instead (it will be uploaded)"
    if scheme not in _REMOTE_SCHEMES:
        shown = f"{scheme}://" if scheme else "(none)"
        return f"URL scheme {shown} is not accepted; use http(s)://, data: or a local path"
    if not urlsplit(reference).netloc:
        return f"URL {reference!r} has no host"
    return None


# Hashing is the slow part of planning a manifest of local clips; a plan (and a process that
# plans twice, like ``run`` after ``plan``) reads each file's bytes once unless it changed.
_hash_cache: dict[tuple[Path, int, int], LocalFile] = {}
_probe_cache: dict[tuple[Path, int, int], MediaInfo | MediaError] = {}


def _identity(path: Path) -> tuple[Path, int, int]:
    # realpath, not Path.resolve: a symlink loop must fail as ELOOP at stat (an OSError),
    # not as resolve's RuntimeError.
    resolved = Path(os.path.realpath(path))
    info = resolved.stat()
    if not stat.S_ISREG(info.st_mode):
        # Reading a FIFO blocks until a writer comes, /dev/zero never ends: only regular
        # files are hashed, probed or uploaded.
        raise not_a_regular_file(path, info.st_mode)
    return resolved, info.st_size, info.st_mtime_ns


def not_a_regular_file(path: Path, mode: int) -> OSError:
    """The error for a path that exists but is a directory, FIFO, device or socket."""
    if stat.S_ISDIR(mode):
        return IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
    if stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    else:
        kind = "a socket"
    return OSError(errno.EINVAL, f"is {kind}, not a regular file", str(path))


def local_file(path: Path) -> LocalFile:
    """The ``LocalFile`` for ``path``: its sha256, size and content type (raises OSError)."""
    identity = _identity(path)
    cached = _hash_cache.get(identity)
    if cached is None:
        digest = hashlib.sha256()
        with identity[0].open("rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
        # The name the manifest uses (not a symlink's target) is what reports should show.
        shown = path.absolute()
        cached = LocalFile(
            shown,
            digest.hexdigest(),
            identity[1],
            content_type(path),
            str(identity[0]),
            identity[2],
        )
        _hash_cache[identity] = cached
    return cached


def probe(path: Path) -> MediaInfo:
    """Read ``path``'s container headers: kind, format, codec, size, duration.

    Raises ``MediaError`` when the file cannot be opened as media at all.
    """
    try:
        identity = _identity(path)
    except OSError as exc:
        raise MediaError(path, exc.strerror or str(exc)) from None
    cached = _probe_cache.get(identity)
    if cached is None:
        cached = _probe_uncached(identity[0], identity[1])
        _probe_cache[identity] = cached
    if isinstance(cached, MediaError):
        raise MediaError(cached.path, cached.reason)
    return cached


def _probe_uncached(path: Path, size: int) -> MediaInfo | MediaError:
    try:
        with av.open(os.fspath(path)) as container:
            format_name = container.format.name
            streams = container.streams.video
            if not streams:
                return MediaInfo("unknown", format_name, None, None, None, None, None, size)
            stream = streams[0]
            duration: float | None = None
            if container.duration is not None:
                duration = container.duration / av.time_base
            elif stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            frames = stream.frames or None
            moving = frames > 1 if frames else (duration or 0.0) > 0.0
            # An AVIF still arrives in an ISO-BMFF (mov) container and a GIF may hold one
            # frame or many: only the name and the motion tell a still from a clip.
            still = (
                format_name.endswith("_pipe")
                or format_name == "image2"
                or (extension(path.name) in IMAGE_EXTENSIONS and not moving)
            )
            if still and next(container.decode(stream), None) is None:
                # A still's header says little (a PNG signature over junk passes it); its
                # one picture is cheap to decode, and a broken one would be paid for.
                return MediaError(path, "no picture could be decoded from it")
            return MediaInfo(
                "image" if still else "video",
                format_name,
                stream.codec_context.name,
                stream.width or None,
                stream.height or None,
                None if still else duration,
                frames,
                size,
            )
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        return MediaError(path, reason)


def probe_remote(url: str, *, timeout: float = 10.0) -> MediaInfo:
    """What an HTTP HEAD says about a remote file: its kind (from Content-Type) and size.

    Used only when the user asks for ``--probe-remote``; planning never touches the network.
    Raises ``MediaError`` when the URL does not answer with a success status.
    """
    import httpx  # only the remote probe needs it; planning must not pay its import

    problem = reference_problem(url)
    if problem is not None:
        raise MediaError(Path(url), problem)
    if url.startswith("data:"):
        mime = url[5:].split(",", 1)[0].split(";", 1)[0]
        return MediaInfo(_kind_of_mime(mime), mime, None, None, None, None, None, None)
    try:
        response = httpx.head(url, follow_redirects=True, timeout=timeout)
    except httpx.HTTPError as exc:
        raise MediaError(Path(url), f"could not be reached: {exc}") from None
    if response.status_code >= 400:
        raise MediaError(Path(url), f"answered HTTP {response.status_code}")
    mime = response.headers.get("content-type", "").split(";", 1)[0].strip()
    length = response.headers.get("content-length")
    size = int(length) if length and length.isdigit() else None
    return MediaInfo(_kind_of_mime(mime), mime, None, None, None, None, None, size)


def _kind_of_mime(mime: str) -> ProbedKind:
    major = mime.split("/", 1)[0]
    return "video" if major == "video" else "image" if major == "image" else "unknown"
