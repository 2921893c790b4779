"""Where a run's outputs go: the sink interface, and its local implementation."""

from __future__ import annotations

import contextlib
import hashlib
import os
import ssl
import stat
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Protocol

import httpx

from ..errors import LocalStepFailed
from ._atomic import CHUNK_SIZE, Downloaded, Target, disk_error, open_nofollow
from ._download import download


class OutputSink(Protocol):
    """Where a run's outputs go. The engine knows outputs only by their relative POSIX
    paths; an implementation decides what those are (``LocalSink``: files under a root)."""

    async def download(
        self,
        client: httpx.AsyncClient,
        url: str,
        relative: PurePosixPath,
        *,
        expected_size: int | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Downloaded:
        """Fetch ``url`` into ``relative``, verified, atomically."""

    def write(self, relative: PurePosixPath, produce: Callable[[Path], None]) -> Downloaded:
        """Store what ``produce`` writes at the local path it is given, atomically."""

    def path(self, relative: str | PurePosixPath) -> Path:
        """A local path from which the done output ``relative`` can be read."""

    def check(
        self, relative: str, size: int, sha256: str, *, mtime_ns: int | None, full: bool
    ) -> str | None:
        """Why the done output is not as recorded, or None (see ``LocalSink.check``)."""

    def stamp(self, relative: str | PurePosixPath) -> int | None:
        """A cheap version stamp of a done output, recorded to notice later edits."""

    def move(self, relative: str, to: str) -> bool:
        """Move a done output to another relative path, never over an existing file; False
        when there was nothing to move."""


class LocalSink:
    """Outputs as files under one root directory (the output directory).

    The engine names each output by its relative POSIX path; only this class turns that
    into a place on disk. Every file is written as ``<name>.part`` and renamed once it is
    complete and fsynced, so a final name never holds half a file.
    """

    def __init__(self, root: Path, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.root = root
        self._root = os.fspath(root)
        self._ssl = ssl_context

    async def download(
        self,
        client: httpx.AsyncClient,
        url: str,
        relative: PurePosixPath,
        *,
        expected_size: int | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Downloaded:
        """Fetch ``url`` into ``relative`` (see :func:`runner.outputs.download`)."""
        return await download(
            client,
            url,
            self.root / relative,
            root=self.root,
            expected_size=expected_size,
            on_bytes=on_bytes,
            ssl_context=self._ssl,
        )

    def path(self, relative: str | PurePosixPath) -> Path:
        """Where the done output ``relative`` can be read (a local step's input)."""
        return self.root / PurePosixPath(relative)

    def write(self, relative: PurePosixPath, produce: Callable[[Path], None]) -> Downloaded:
        """Have ``produce`` write the file at the path it is given (the part), then hash,
        fsync and rename it into place (blocking: call it in a worker thread). What
        ``produce`` raises is passed on, its part deleted."""
        with contextlib.closing(Target.open(self.root, relative)) as target:
            target.discard()  # a part left by a killed run is not resumable here
            part = target.path.with_name(target.part)
            try:
                produce(part)
            except BaseException:
                target.discard()
                raise
            try:
                fd = open_nofollow(target.part, os.O_RDONLY, target.dir_fd, target.path)
                try:
                    digest, size = hashlib.sha256(), 0
                    while chunk := os.read(fd, CHUNK_SIZE):
                        digest.update(chunk)
                        size += len(chunk)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                target.commit()
            except FileNotFoundError:
                raise LocalStepFailed(f"the step wrote nothing at {part}") from None
            except OSError as exc:
                raise disk_error(part, exc) from exc
            return Downloaded(target.path, size, digest.hexdigest())

    def check(
        self, relative: str, size: int, sha256: str, *, mtime_ns: int | None, full: bool
    ) -> str | None:
        """Why the done output ``relative`` is not as recorded (missing, not a file, another
        size, or another sha256), or None when it is.

        Quick (``full`` false): a stat, and the sha256 only of a file whose mtime is not
        ``mtime_ns`` (touched, or edited in place keeping its size); ``full`` hashes every
        file.
        """
        # A string join, not a Path: ``run`` stats every done output before it starts.
        path = os.path.join(self._root, relative)
        try:
            info = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            return f"{relative} is missing"
        except OSError as exc:
            return f"{relative} cannot be read: {exc.strerror or exc}"
        if not stat.S_ISREG(info.st_mode):
            return f"{relative} is not a regular file"
        if info.st_size != size:
            return f"{relative} has {info.st_size} bytes, {size} were recorded"
        if not full and (mtime_ns is None or info.st_mtime_ns == mtime_ns):
            return None
        try:
            digest = _sha256(path)
        except OSError as exc:
            return f"{relative} cannot be read: {exc.strerror or exc}"
        if digest != sha256:
            return f"{relative} was altered: its sha256 is not the one recorded"
        return None

    def stamp(self, relative: str | PurePosixPath) -> int | None:
        """The done output's mtime in ns (None if it cannot be read)."""
        try:
            return os.stat(self.path(relative), follow_symlinks=False).st_mtime_ns
        except OSError:
            return None

    def move(self, relative: str, to: str) -> bool:
        """Move ``relative`` to ``to`` (both under the root), never over an existing file.

        A hard link, then the old name removed: the move cannot replace a file, and one
        interrupted between the two steps is finished by the next call. False when there
        is nothing at ``relative``; a file already at ``to`` is kept (the move was done).
        """
        source, target = self.path(relative), self.path(to)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target, follow_symlinks=False)
            except FileExistsError:
                if not os.path.samefile(source, target):
                    return True  # moved before; another file has the old name since
            os.unlink(source)
        except FileNotFoundError:
            return target.exists()
        except OSError as exc:
            raise disk_error(target, exc) from exc
        self._prune(source.parent)
        return True

    def _prune(self, directory: Path) -> None:
        """Remove the directories a move left empty, up to the root (never the root)."""
        root = self.root.absolute()
        directory = directory.absolute()
        while directory != root and root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return  # not empty (or not ours to remove): stop there
            directory = directory.parent


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()
