"""The directory lock that keeps two runs off one state file."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..errors import DiskError, StateLocked


class DirectoryLock:
    """An exclusive lock on an output directory, so two runs never share a state file.

    ``flock`` is released by the kernel when the process dies, so a SIGKILLed run never
    leaves a stale lock behind.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".raybatch.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StateLocked` naming the holder."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DiskError(f"cannot create {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StateLocked(
                f"{self.path.parent} is in use by another raybatch run (pid {holder});"
                " wait for it to finish or stop it first"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as exc:
            os.close(fd)
            raise DiskError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._fd = fd

    def holder(self) -> int | None:
        """The pid the lock file names: the holder's while the lock is held."""
        try:
            text = self.path.read_text(errors="replace").strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def release(self) -> None:
        """Give the lock back."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
