"""The one error media code raises, and the translation of PyAV's and the OS's errors into it."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av

from runner.errors import DiskError, PermanentError

# Only a write fails for these reasons, and it is the disk's fault, not the media's: the run
# must stop (DiskError) instead of failing one job after another.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


class MediaError(PermanentError):
    """A file could not be read or written as the media it should be; ``reason`` says why.

    A permanent error: the job that needed the file fails, the rest of the batch goes on.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def reason_of(exc: BaseException) -> str:
    """The short human reason an FFmpeg or OS error carries (no file name, no traceback)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text)


@contextmanager
def media_errors(path: Path, dest: Path | None = None) -> Iterator[None]:
    """Turn any PyAV/OS failure inside the block into a ``MediaError`` naming the file.

    The file is ``path`` (the one being read) unless the error names ``dest``; a write to
    ``dest`` that fails because the disk is full or read-only is a ``DiskError`` instead.
    """
    try:
        yield
    except (av.FFmpegError, OSError, EOFError) as exc:
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            raise DiskError(f"{dest or path}: {reason_of(exc)}") from None
        named = getattr(exc, "filename", None)
        culprit = dest if dest is not None and named == os.fspath(dest) else path
        raise MediaError(culprit, reason_of(exc)) from exc
