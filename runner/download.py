"""Verified, atomic, resumable downloads of output files (promise P7).

Ordering (style-reliability §B.2): bytes stream into ``<name>.part`` beside the final
name and are hashed on the way. Then size and sha256 are checked, the part is fsynced,
renamed over the final name with ``os.replace``, and the directory is fsynced. A file is
never visible under its final name half written, and the caller records ``done`` only
after :func:`download` returns.

Resume: ``<name>.part.json`` remembers the URL the part came from and its strong ETag.
A later call for the *same* URL asks for the rest with ``Range`` (plus ``If-Range`` when
an ETag is known): a 206 appends after re-hashing the part, a 200 restarts from zero. A
part from another URL (say, a resubmitted job's new output) is never continued.

Safety: the URL and every redirect (at most 5, followed here, never by httpx) must be
http(s). ``dest`` must lie under ``root``. Directories are walked from an open ``root``
with ``O_NOFOLLOW`` and every file is opened relative to its directory's fd, so a
symlink planted below ``root`` is refused and cannot be swapped in between check and use.

Errors: every HTTP error is ``DownloadError`` (retryable), 403 and 404 included: a CDN
can answer them briefly while an object propagates, and a permanent one ends when the
scheduler's attempt limit runs out. Transport errors, short bodies and checksum or
size mismatches are ``DownloadError`` too; a mismatched part is deleted, a merely short
one is kept for resume. ``OSError`` while writing (ENOSPC, EIO, EROFS, EDQUOT, ...) is
``DiskError`` (fatal): the part stays, the final name is never touched.

Threads: the whole download (the output's directories, the resume point, the GET, the
commit) is one call into a worker thread, on a blocking ``httpx.Client``, and a second
thread hashes and writes, because httpx's asyncio read path (a loop wake-up, a timeout
scope and an h11 event per socket read, all holding the GIL the hashing needs) capped a
download near 340 MiB/s on loopback where curl does twice that. The caller's
``AsyncClient`` lends its timeouts, default headers and proxy settings. Cancelling
:func:`download` shuts the fetch's sockets down, which wakes a blocked read at once, and
waits for the threads to let go of the part, so nothing writes it after the call ends;
only what cannot be interrupted (making the output's directories, a connect under way,
bounded by the connect timeout) is left to finish alone, and it writes no file.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import functools
import hashlib
import json
import os
import queue
import re
import ssl
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import httpx

from . import crashpoints
from .errors import DiskError, DownloadError, UnsafeOutput
from .paths import output_name_for, relative_to_root, safe_extension, safe_output_path
from .socket_guard import SocketGuard

__all__ = (
    "Downloaded",
    "download",
    "output_name_for",
    "safe_extension",
    "safe_output_path",
)

#: Bytes per read of a resumed part while re-hashing it.
CHUNK_SIZE = 1024 * 1024
#: Chunks (up to ``_READ_BYTES`` each) the network may run ahead of the disk.
_CHUNKS_AHEAD = 8
#: Written bytes after which the kernel is asked to start writing the part back to disk,
#: so the fsync before the rename waits for the last few MiB, not the whole file.
_WRITE_BEHIND = 16 * 1024 * 1024
#: Body bytes httpcore may take per socket read. Its default (64 KiB) costs an h11 event
#: and a Python round per 64 KiB, which caps a download near 250 MiB/s on loopback; a read
#: returns whatever has arrived, so streams and small answers are unaffected.
_READ_BYTES = 1024 * 1024
#: How often the bytes written so far are passed to ``on_bytes``.
_PROGRESS_SECONDS = 0.1


def _raise_read_size() -> None:
    """Let httpcore's blocking HTTP/1.1 connections read up to ``_READ_BYTES`` at a time.

    A class attribute of httpcore's (``READ_NUM_BYTES``), set once for the process:
    httpx offers no per-client knob. Only the downloader uses blocking clients.
    """
    try:
        from httpcore._sync.http11 import HTTP11Connection
    except ImportError:  # pragma: no cover - a future httpcore; keep its default
        return
    if getattr(HTTP11Connection, "READ_NUM_BYTES", _READ_BYTES) < _READ_BYTES:
        HTTP11Connection.READ_NUM_BYTES = _READ_BYTES


_raise_read_size()
MAX_REDIRECTS = 5
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_SYMLINK_ERRNOS = {errno.ELOOP, errno.ENOTDIR, errno.EMLINK}  # EMLINK: FreeBSD's ELOOP


@dataclass(frozen=True)
class Downloaded:
    """A verified file under its final name."""

    path: Path
    size: int
    sha256: str


async def download(
    client: httpx.AsyncClient,
    url: str,
    dest: Path,
    *,
    root: Path,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> Downloaded:
    """Fetch ``url`` to ``dest`` (under ``root``), verified and atomically renamed.

    ``client`` supplies the timeouts, default headers and proxy settings; the transfer
    itself runs on a blocking client in worker threads (see the module docstring).
    ``on_bytes`` is called, on the event loop, with the bytes written since its last call
    (never for bytes a resumed part already held). See the module docstring for errors
    and resume.
    """
    relative = relative_to_root(root, dest)
    _check_scheme(url)
    fetch = _Fetch(client, root, relative, url, expected_size, expected_sha256)
    return await fetch.run(on_bytes)


class _Fetch:
    """One download's directories, GET, body, verification and commit, in worker threads.

    The event loop only starts it (one hand-off to a worker: each one costs the GIL going
    back and forth, which on short jobs was a good part of the CPU), relays progress and,
    when cancelled, calls :meth:`stop`. ``stop`` and :meth:`_enter_disk` share a lock, so
    either the fetch is stopped before it touches the part (and never will; it may still
    have created the output's directories), or it is already writing and the canceller
    waits for it to stop.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        root: Path,
        relative: PurePosixPath,
        url: str,
        expected_size: int | None,
        expected_sha256: str | None,
    ) -> None:
        self.root, self.relative, self.url = root, relative, url
        self.expected_size, self.expected_sha256 = expected_size, expected_sha256
        self.timeout, self.trust_env = client.timeout, client.trust_env
        self.default_headers = httpx.Headers(client.headers)
        #: Body bytes appended to the part so far (by whichever thread writes the part).
        self.written = 0
        self._guard = SocketGuard()
        self._on_disk = False
        self._done = threading.Event()

    async def run(self, on_bytes: Callable[[int], None] | None) -> Downloaded:
        """Run the fetch to the end, relaying progress to ``on_bytes``."""
        reported = 0

        def report() -> None:
            nonlocal reported
            written = self.written
            if on_bytes is not None and written > reported:
                on_bytes(written - reported)
            reported = written

        async def relay_progress() -> None:
            while True:
                await anyio.sleep(_PROGRESS_SECONDS)
                report()

        outcome: list[Downloaded] = []
        failed: list[Exception] = []
        try:
            # The outcome is kept, not raised, inside the task group, which would wrap an
            # error in an ExceptionGroup.
            async with anyio.create_task_group() as group:
                if on_bytes is not None:
                    group.start_soon(relay_progress)
                try:
                    outcome.append(await self._in_thread())
                except Exception as exc:
                    failed.append(exc)
                finally:
                    group.cancel_scope.cancel()
        finally:
            report()
        if failed:
            raise failed[0]
        return outcome[0]

    async def _in_thread(self) -> Downloaded:
        try:
            return await anyio.to_thread.run_sync(self._fetch, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            if self.stop():
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._done.wait)
            raise

    def stop(self) -> bool:
        """Stop the fetch (from any thread); True if it may be writing the part still."""
        self._guard.stop()
        with self._guard.lock:
            return self._on_disk

    def _enter_disk(self) -> None:
        """Mark the fetch as touching the part from now on, unless it was stopped."""
        with self._guard.lock:
            if self._guard.stopped:
                raise DownloadError("download cancelled")
            self._on_disk = True

    def _fetch(self) -> Downloaded:
        """The whole download, blocking (in a worker thread)."""
        try:
            with contextlib.closing(_Target.open(self.root, self.relative)) as target:
                try:
                    offset, etag = target.resume_point(self.url)
                except OSError as exc:
                    raise _disk_error(target.path.with_name(target.part), exc) from exc
                headers = {"Accept-Encoding": "identity"}
                if offset:
                    headers["Range"] = f"bytes={offset}-"
                    if etag:
                        headers["If-Range"] = etag
                with (
                    httpx.Client(
                        headers=self.default_headers,
                        timeout=self.timeout,
                        trust_env=self.trust_env,
                        verify=_tls_context(self.trust_env),
                        follow_redirects=False,
                    ) as http,
                    self._get(http, headers) as response,
                ):
                    # A digest the server vouches for is the only way to catch bytes
                    # flipped in transit (the size alone cannot); fal's File objects carry
                    # no checksum.
                    expected_sha256 = self.expected_sha256 or _repr_digest(response)
                    self._enter_disk()
                    try:
                        return self._save(response, target, offset, expected_sha256)
                    except OSError as exc:
                        raise _disk_error(target.path.with_name(target.part), exc) from exc
        finally:
            self._done.set()

    def _save(
        self,
        response: httpx.Response,
        target: _Target,
        offset: int,
        expected_sha256: str | None,
    ) -> Downloaded:
        """Stream the body into the part, then verify and commit it."""
        expected_size = self.expected_size
        start, total = _extent(response, offset, target)
        if expected_size is not None and total is not None and total != expected_size:
            target.discard()
            raise DownloadError(f"the server offers {total} bytes, expected {expected_size}")
        with contextlib.closing(target.open_part(start, self.url, _strong_etag(response))) as part:
            self._stream_into(response, part, total)
            return _verify_and_commit(target, part, total, expected_size, expected_sha256)

    def _stream_into(self, response: httpx.Response, part: _Part, total: int | None) -> None:
        """Append the body to the part; on a broken stream keep every byte that came."""
        if total is not None and total - part.size <= _READ_BYTES:
            # A body of one read: a writer thread would cost more (its start, the GIL going
            # back and forth) than it could overlap.
            read_failed = self._read_body(response, functools.partial(self._append, part))
        else:
            read_failed = self._read_behind_writer(response, part)
        if self._guard.stopped:
            raise DownloadError("download cancelled")
        if read_failed is not None:
            got = f"got {part.size} of {total}" if total else f"got {part.size}"
            reason = _reason(read_failed)
            raise DownloadError(f"download truncated: {got} bytes ({reason})") from read_failed

    def _append(self, part: _Part, data: bytes) -> bool:
        """Write ``data`` to the part; True: go on reading."""
        part.write(data)
        self.written += len(data)
        return True

    def _read_body(
        self, response: httpx.Response, write: Callable[[bytes], bool]
    ) -> httpx.RequestError | None:
        """Pass the body to ``write`` until it ends, breaks (returned), or is stopped."""
        try:
            for chunk in response.iter_bytes():
                if self._guard.stopped or not write(chunk):
                    break
        except httpx.RequestError as exc:
            return exc
        return None

    def _read_behind_writer(
        self, response: httpx.Response, part: _Part
    ) -> httpx.RequestError | None:
        """Read here while a writer thread hashes and writes, taking chunks through a
        small bounded queue, so memory stays at a few MiB whatever the file size."""
        chunks: queue.Queue[bytes | None] = queue.Queue(_CHUNKS_AHEAD)
        write_failed: list[BaseException] = []

        def write_all() -> None:
            while (data := chunks.get()) is not None:
                if write_failed or self._guard.stopped:
                    continue  # keep draining so the reader never blocks on a full queue
                try:
                    self._append(part, data)
                except BaseException as exc:
                    write_failed.append(exc)

        def put(data: bytes) -> bool:
            if write_failed:
                return False
            chunks.put(data)
            return True

        writer = threading.Thread(target=write_all, name="raybatch download writer")
        writer.start()
        try:
            read_failed = self._read_body(response, put)
        finally:
            chunks.put(None)
            writer.join()
        if write_failed:
            raise write_failed[0]
        return read_failed

    @contextlib.contextmanager
    def _get(self, http: httpx.Client, headers: dict[str, str]) -> Iterator[httpx.Response]:
        """GET with redirects followed by hand, each target checked before it is contacted."""
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            request = http.build_request(
                "GET", url, headers=headers, extensions={"trace": self._guard.trace}
            )
            try:
                response = http.send(request, stream=True, follow_redirects=False)
            except httpx.RequestError as exc:
                raise DownloadError(f"download request failed ({_reason(exc)})") from exc
            except httpx.InvalidURL as exc:
                # httpx prepares ``next_request`` for every redirect even when not following
                # it, and a Location it cannot parse (``data:...``) raises here.
                raise UnsafeOutput("a download redirect named an invalid URL") from exc
            if not response.is_redirect:
                try:
                    yield response
                finally:
                    response.close()
                return
            response.close()
            try:
                url = str(response.url.join(response.headers["location"]))
            except httpx.InvalidURL as exc:
                raise UnsafeOutput("a download redirect named an invalid URL") from exc
            _check_scheme(url, redirect=True)
        raise DownloadError(f"download followed more than {MAX_REDIRECTS} redirects")


@functools.cache
def _tls_context(trust_env: bool) -> ssl.SSLContext:
    """httpx's default TLS context, built once: building it costs ~30 ms (the CA bundle)."""
    return httpx.create_ssl_context(trust_env=trust_env)


def _verify_and_commit(
    target: _Target,
    part: _Part,
    total: int | None,
    expected_size: int | None,
    expected_sha256: str | None,
) -> Downloaded:
    """Check the finished part, then make it the final file (runs in a worker thread)."""
    if total is not None and part.size < total:
        raise DownloadError(f"download truncated: got {part.size} of {total} bytes")
    digest = part.hasher.hexdigest()
    problem = None
    if total is not None and part.size > total:
        problem = f"the server sent {part.size} bytes after announcing {total}"
    elif expected_size is not None and part.size != expected_size:
        problem = f"got {part.size} bytes, expected {expected_size}"
    elif expected_sha256 is not None and digest != expected_sha256.lower():
        problem = f"sha256 mismatch: got {digest}, expected {expected_sha256.lower()}"
    if problem:
        target.discard()  # a part with wrong bytes must not be resumed
        raise DownloadError(f"download of {target.path} is corrupt: {problem}")
    os.fsync(part.fd)
    target.commit()
    return Downloaded(target.path, part.size, digest)


class _Part:
    """The open ``.part`` file: its fd, running hash and size."""

    def __init__(self, fd: int, hasher: hashlib._Hash, size: int) -> None:
        self.fd, self.hasher, self.size = fd, hasher, size
        self._written_back = size

    def write(self, data: bytes | bytearray) -> None:
        """Append and hash (in a worker thread; hashlib releases the GIL on big buffers)."""
        _write_all(self.fd, data)
        self.hasher.update(data)
        self.size += len(data)
        if self.size - self._written_back >= _WRITE_BEHIND:
            self._write_behind()
        crashpoints.reached("mid_download")

    def _write_behind(self) -> None:
        """Start writeback of what was written, and drop what the disk already has.

        On Linux ``POSIX_FADV_DONTNEED`` begins asynchronous writeback of the range's dirty
        pages and drops its clean ones. Covering the whole part each time does both: the
        disk works while the network does, so the fsync before the rename waits for the
        last few MiB, and pages the disk has finished with are freed while the download
        runs, so its next writes reuse them. Without that, a 1 GiB download fills 1 GiB of
        never-touched page cache; on a VM whose balloon hands free memory back to the host
        (virtio free page reporting), the first write into each such page faults on the
        host, which here cost 2 s of CPU per GiB against 0.3 s for recycled pages.
        Elsewhere it is a harmless hint.
        """
        advise = getattr(os, "posix_fadvise", None)
        if advise is not None:
            with contextlib.suppress(OSError):
                advise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)  # length 0: to the end
        self._written_back = self.size

    def close(self) -> None:
        """Close the fd (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Target:
    """The destination's directory, held open by fd, and the names inside it.

    Methods are blocking: the fetch's worker thread calls them.
    """

    def __init__(self, dir_fd: int, name: str, path: Path) -> None:
        self.dir_fd, self.name, self.path = dir_fd, name, path
        self.part, self.meta = f"{name}.part", f"{name}.part.json"

    @classmethod
    def open(cls, root: Path, relative: PurePosixPath) -> _Target:
        """Open (creating) each directory of ``relative`` below ``root``, refusing symlinks."""
        try:
            os.makedirs(root, exist_ok=True)
            fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _disk_error(root, exc) from exc
        try:
            for name in relative.parts[:-1]:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o755, dir_fd=fd)
                below = _open_nofollow(name, os.O_RDONLY | os.O_DIRECTORY, fd, root / relative)
                os.close(fd)
                fd = below
            try:
                mode = os.stat(relative.name, dir_fd=fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                mode = stat.S_IFREG
            if not stat.S_ISREG(mode):
                raise UnsafeOutput(f"{root / relative} exists and is not a regular file")
        except OSError as exc:
            os.close(fd)
            raise _disk_error(root / relative, exc) from exc
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, relative.name, root / relative)

    def resume_point(self, url: str) -> tuple[int, str | None]:
        """(bytes already in the part, its ETag) if the part came from ``url``, else (0, None)."""
        try:
            fd = _open_nofollow(self.meta, os.O_RDONLY, self.dir_fd, self.path)
        except FileNotFoundError:
            return 0, None
        try:
            meta = json.loads(os.read(fd, 65536) or b"null")
        except ValueError:
            return 0, None
        finally:
            os.close(fd)
        if not isinstance(meta, dict) or meta.get("url") != url:
            return 0, None
        try:
            info = os.stat(self.part, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return 0, None
        etag = meta.get("etag")
        return info.st_size, etag if isinstance(etag, str) else None

    def open_part(self, start: int, url: str, etag: str | None) -> _Part:
        """Open the part to write from ``start``: truncated and re-labelled at 0, else re-hashed."""
        fd = _open_nofollow(self.part, os.O_RDWR | os.O_CREAT, self.dir_fd, self.path)
        try:
            hasher = hashlib.sha256()
            if start == 0:
                os.ftruncate(fd, 0)
                self._write_meta({"url": url, "etag": etag})
            else:
                done = 0
                while done < start:
                    chunk = os.pread(fd, min(CHUNK_SIZE, start - done), done)
                    if not chunk:
                        self.discard()
                        raise DownloadError(f"{self.part} shrank while resuming; starting over")
                    hasher.update(chunk)
                    done += len(chunk)
                os.ftruncate(fd, start)
            os.lseek(fd, start, os.SEEK_SET)
            return _Part(fd, hasher, start)
        except BaseException:
            os.close(fd)
            raise

    def _write_meta(self, meta: dict[str, Any]) -> None:
        # Not fsynced: it is a hint. A stale or torn label only costs a restart from zero,
        # because If-Range makes the server send the whole file when the ETag differs.
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        fd = _open_nofollow(self.meta, flags, self.dir_fd, self.path)
        try:
            _write_all(fd, json.dumps(meta).encode())
        finally:
            os.close(fd)

    def discard(self) -> None:
        """Delete the part and its label."""
        for name in (self.part, self.meta):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=self.dir_fd)

    def commit(self) -> None:
        """Rename the (fsynced) part over the final name and make the rename durable."""
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISREG(
                os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False).st_mode
            ):
                raise UnsafeOutput(f"{self.path} exists and is not a regular file")
        os.replace(self.part, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.meta, dir_fd=self.dir_fd)
        os.fsync(self.dir_fd)

    def close(self) -> None:
        """Close the directory fd."""
        os.close(self.dir_fd)


def _extent(response: httpx.Response, offset: int, target: _Target) -> tuple[int, int | None]:
    """(first byte of the body, total size if known), from a 200 or 206 answer."""
    code = response.status_code
    length = response.headers.get("content-length")
    encoded = response.headers.get("content-encoding", "identity").lower() != "identity"
    if code == 200:
        return 0, int(length) if length and length.isdigit() and not encoded else None
    if code == 206:
        match = _CONTENT_RANGE.fullmatch(response.headers.get("content-range", "").strip())
        if match and int(match.group(1)) == offset:
            total = match.group(3)
            return offset, int(total) if total.isdigit() else int(match.group(2)) + 1
        target.discard()
        raise DownloadError("the server resumed at the wrong offset; starting over next time")
    if code == 416:
        target.discard()  # the part no longer fits the file: start over
    raise DownloadError(f"download answered HTTP {code} from {response.url.host}")


def _check_scheme(url: str, *, redirect: bool = False) -> None:
    try:
        scheme = httpx.URL(url).scheme
    except httpx.InvalidURL as exc:
        raise UnsafeOutput("output URL is not a valid URL") from exc
    if scheme not in ("http", "https"):
        what = "a redirect to" if redirect else "an output URL with scheme"
        raise UnsafeOutput(f"refusing {what} {scheme}:// (only http and https are followed)")


def _repr_digest(response: httpx.Response) -> str | None:
    """The sha-256 of the whole file from an RFC 9530 ``Repr-Digest`` header, as hex."""
    match = re.search(r"sha-256=:([A-Za-z0-9+/=]+):", response.headers.get("repr-digest", ""))
    if match is None:
        return None
    try:
        raw = base64.b64decode(match.group(1), validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 32 else None


def _strong_etag(response: httpx.Response) -> str | None:
    # RFC 9110 §13.1.5: If-Range may only carry a strong validator.
    etag = response.headers.get("etag")
    return etag if etag and not etag.startswith("W/") else None


def _open_nofollow(name: str, flags: int, dir_fd: int, shown: Path, mode: int = 0o644) -> int:
    """``os.open`` relative to ``dir_fd`` that refuses a symlink (or a non-regular file)."""
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _SYMLINK_ERRNOS:
            raise UnsafeOutput(
                f"refusing to write through a symlink at {name!r} under {shown}"
            ) from exc
        raise
    kind = os.fstat(fd).st_mode
    if not (stat.S_ISDIR(kind) if flags & os.O_DIRECTORY else stat.S_ISREG(kind)):
        os.close(fd)
        raise UnsafeOutput(f"{name!r} under {shown} is not a regular file or directory")
    return fd


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _disk_error(path: Path, exc: OSError) -> DiskError:
    code = errno.errorcode.get(exc.errno or 0, "OSError")
    return DiskError(f"cannot write {path}: {exc.strerror or exc} ({code})")


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
