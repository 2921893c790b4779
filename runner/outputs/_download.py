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
import functools
import queue
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import anyio
import httpx

from ..errors import DownloadError, UnsafeOutput
from ..net import SocketGuard, tls_context
from ._atomic import Downloaded, Part, Target, disk_error, verify_and_commit
from ._paths import relative_to_root
from ._transport import READ_BYTES, BulkTransport

#: Chunks (up to ``READ_BYTES`` each) the network may run ahead of the disk.
_CHUNKS_AHEAD = 8
#: How often the bytes written so far are passed to ``on_bytes``.
_PROGRESS_SECONDS = 0.1
MAX_REDIRECTS = 5
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


async def download(
    client: httpx.AsyncClient,
    url: str,
    dest: Path,
    *,
    root: Path,
    expected_size: int | None = None,
    expected_sha256: str | None = None,
    on_bytes: Callable[[int], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Downloaded:
    """Fetch ``url`` to ``dest`` (under ``root``), verified and atomically renamed.

    ``client`` supplies the timeouts, default headers and proxy settings; the transfer
    itself runs on a blocking client in worker threads (see the module docstring).
    ``on_bytes`` is called, on the event loop, with the bytes written since its last call
    (never for bytes a resumed part already held). ``ssl_context`` spares building one
    per download (the session's). See the module docstring for errors and resume.
    """
    relative = relative_to_root(root, dest)
    _check_scheme(url)
    context = ssl_context or tls_context(trust_env=client.trust_env)
    fetch = _Fetch(client, root, relative, url, expected_size, expected_sha256, context)
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
        ssl_context: ssl.SSLContext,
    ) -> None:
        self.root, self.relative, self.url = root, relative, url
        self.ssl_context = ssl_context
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
            with contextlib.closing(Target.open(self.root, self.relative)) as target:
                try:
                    offset, etag = target.resume_point(self.url)
                except OSError as exc:
                    raise disk_error(target.path.with_name(target.part), exc) from exc
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
                        transport=BulkTransport(self.ssl_context),
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
                        raise disk_error(target.path.with_name(target.part), exc) from exc
        finally:
            self._done.set()

    def _save(
        self,
        response: httpx.Response,
        target: Target,
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
            return verify_and_commit(target, part, total, expected_size, expected_sha256)

    def _stream_into(self, response: httpx.Response, part: Part, total: int | None) -> None:
        """Append the body to the part; on a broken stream keep every byte that came."""
        if total is not None and total - part.size <= READ_BYTES:
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

    def _append(self, part: Part, data: bytes) -> bool:
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
        self, response: httpx.Response, part: Part
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
                raise DownloadError(
                    f"download request failed ({_reason(exc)})", outage=True
                ) from exc
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


def _extent(response: httpx.Response, offset: int, target: Target) -> tuple[int, int | None]:
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
    raise DownloadError(
        f"download answered HTTP {code} from {response.url.host}",
        status_code=code,
        outage=code >= 500,
    )


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


def _reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
