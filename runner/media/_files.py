"""Local files and references: content types, identities, hashes, and the explicit cache.

``local_file`` hashes a clip's bytes; ``reference_problem`` decides which remote
references may be sent to fal at all. Nothing here is remembered between calls unless the
caller passes a ``MediaCache`` it owns: no module keeps state.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

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


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """What a file is, as far as the file system says without reading it.

    Size and mtime alone miss a file rewritten to the same size within one mtime tick;
    the inode and ctime (which no user-level call can set back) catch that too.
    """

    real: Path
    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def file_identity(path: Path) -> FileIdentity:
    """The identity of the regular file at ``path`` (raises OSError, also for non-files)."""
    # realpath, not Path.resolve: a symlink loop must fail as ELOOP at stat (an OSError),
    # not as resolve's RuntimeError.
    resolved = Path(os.path.realpath(path))
    info = resolved.stat()
    if not stat.S_ISREG(info.st_mode):
        # Reading a FIFO blocks until a writer comes, /dev/zero never ends: only regular
        # files are hashed, probed or uploaded.
        raise not_a_regular_file(path, info.st_mode)
    return FileIdentity(
        resolved, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns
    )


class MediaCache:
    """A bounded memo of what was learnt about files, owned by whoever passes it in.

    Keys are ``(what, FileIdentity)``: a file that changed in any way ``FileIdentity`` sees
    is a new key. Least recently used entries go first once ``limit`` is reached.
    """

    def __init__(self, limit: int = 4096) -> None:
        if limit < 1:
            raise ValueError("a MediaCache holds at least one entry")
        self.limit = limit
        self._entries: OrderedDict[tuple[str, FileIdentity], object] = OrderedDict()
        # Media steps run in worker threads; one cache may serve several of them.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, what: str, identity: FileIdentity) -> object | None:
        """The value remembered for ``what`` about this file, or None."""
        key = (what, identity)
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
        return value

    def put(self, what: str, identity: FileIdentity, value: object) -> None:
        """Remember ``value`` for ``what`` about this file, forgetting the oldest if full."""
        with self._lock:
            self._entries[(what, identity)] = value
            self._entries.move_to_end((what, identity))
            while len(self._entries) > self.limit:
                self._entries.popitem(last=False)


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


def local_file(path: Path, cache: MediaCache | None = None) -> LocalFile:
    """The ``LocalFile`` for ``path``: its sha256, size and content type (raises OSError).

    With a ``cache``, a file whose identity has not changed is not read again.
    """
    identity = file_identity(path)
    cached = cache.get("sha256", identity) if cache is not None else None
    if isinstance(cached, LocalFile):
        if cached.path == path.absolute():
            return cached
        # The same bytes under another name (a symlink, a hard link): no need to read them.
        return replace(cached, path=path.absolute(), content_type=content_type(path))
    digest = hashlib.sha256()
    with identity.real.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    # The name the manifest uses (not a symlink's target) is what reports should show.
    found = LocalFile(
        path.absolute(),
        digest.hexdigest(),
        identity.size,
        content_type(path),
        str(identity.real),
        identity.mtime_ns,
    )
    if cache is not None:
        cache.put("sha256", identity, found)
    return found
