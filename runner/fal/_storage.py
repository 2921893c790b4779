"""The storage half of the client: the CDN token and uploads (single and multipart)."""

from __future__ import annotations

import math
import ssl
from collections.abc import AsyncIterator, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import TaskGroup

from ..errors import (
    LocalFileError,
    RaybatchError,
)
from ..net import SocketGuard
from ._classify import transport_error
from ._config import USER_AGENT, FalConfig
from ._wire import Op, header_safe, json_object, part_etag, string_field

MULTIPART_THRESHOLD = 100 * 1024 * 1024
#: fal_client's part size (``MULTIPART_CHUNK_SIZE``, fal-client 1.0.3): above the 5 MiB
#: every part but the last must have on S3-style stores (fal-protocol update 2026-12-04).
PART_SIZE = 10 * 1024 * 1024
#: S3's part-count limit: bigger files get bigger parts (rounded up to whole MiB).
MAX_PARTS = 10_000
_MIB = 1024 * 1024
PART_CONCURRENCY = 4
_READ_CHUNK = 1024 * 1024
_TOKEN_MARGIN = timedelta(seconds=60)


@dataclass(frozen=True)
class CdnToken:
    """A CDN upload token: its Authorization value (never shown), expiry and origin."""

    header: str = field(repr=False)
    expires_at: datetime
    #: The storage origin the token is for (its ``base_url``); fal's client uploads there.
    base_url: str | None = None

    def fresh(self) -> bool:
        return datetime.now(UTC) + _TOKEN_MARGIN < self.expires_at


class StorageOps:
    """Uploads to fal's CDN, mixed into :class:`FalClient` (which provides ``_send``, the
    connection pools and the key); the token lives here and is never logged."""

    config: FalConfig
    _timeout: httpx.Timeout
    _ssl: ssl.SSLContext
    _http: httpx.AsyncClient
    _streams: httpx.AsyncClient
    _token: CdnToken | None
    _token_lock: anyio.Lock

    async def _send(
        self,
        op: Op,
        method: str,
        url: str,
        *,
        auth: str | None = None,
        headers: Mapping[str, str] | None = None,
        allow: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> httpx.Response:
        raise NotImplementedError

    def _classified(self, response: httpx.Response, op: Op) -> RaybatchError:
        raise NotImplementedError

    def _scrub(self, error: RaybatchError) -> RaybatchError:
        raise NotImplementedError

    async def upload(self, path: Path, content_type: str) -> str:
        """Upload a local file to fal's CDN as ``fal_client`` does; returns its access URL.

        One streamed POST up to 100 MiB; above, a multipart upload of parts read from
        disk, a few at a time. Both go to the storage origin the CDN token names as its
        ``base_url`` (``cdn_url`` only when a token names none): fal-client 1.0.3 builds
        its multipart URLs from it (``MultipartUpload.create``), and fal's docs show more
        than one storage host (fal-protocol update 2026-12-04).
        """
        try:
            size = (await anyio.Path(path).stat()).st_size
        except OSError as exc:
            raise local_read_error(path, exc) from exc
        headers = {"Content-Type": content_type, "X-Fal-File-Name": header_safe(path.name)}
        token = await self._cdn_token()
        base = token.base_url or self.config.cdn_url
        if size > MULTIPART_THRESHOLD:
            return await self._upload_multipart(path, size, headers, base, token.header)
        response = await self._send(
            "upload",
            "POST",
            f"{base}/files/upload",
            auth=token.header,
            headers={**headers, "Content-Length": str(size)},
            content=_file_chunks(path, 0, size),
        )
        return string_field(json_object(response, "upload"), "access_url", "upload")

    async def _upload_multipart(
        self, path: Path, size: int, headers: dict[str, str], base_url: str, auth: str
    ) -> str:
        # Parts of PART_SIZE, raised (never below it) to stay within MAX_PARTS parts.
        part_size = PART_SIZE
        if size > PART_SIZE * MAX_PARTS:
            part_size = -(-size // (MAX_PARTS * _MIB)) * _MIB
        response = await self._send(
            "upload",
            "POST",
            f"{base_url}/files/upload/multipart",
            auth=auth,
            headers=headers,
        )
        body = json_object(response, "upload")
        access_url = string_field(body, "access_url", "upload")
        base = f"{access_url}/multipart/{string_field(body, 'uploadId', 'upload')}"
        etags: dict[int, str] = {}
        failures: list[RaybatchError] = []
        limiter = anyio.CapacityLimiter(PART_CONCURRENCY)
        # A transport handed to __init__ (the tests' scripted fal) serves asyncio only; it
        # is also the one case where both pools are the same client. (In a thread: a new
        # client loads the CA bundle, ~30 ms the event loop should not wait.)
        blocking = None
        if self._streams is not self._http:
            blocking = await anyio.to_thread.run_sync(_BlockingParts, self._timeout, self._ssl)

        async def put(number: int, group: TaskGroup) -> None:
            offset = (number - 1) * part_size
            length = min(part_size, size - offset)
            part_headers = {
                "Content-Type": headers["Content-Type"],
                "Content-Length": str(length),
                "Accept-Encoding": "identity",  # fal's CDN drops ETag otherwise
            }
            try:
                async with limiter:
                    url, auth = f"{base}/{number}", await self._cdn_auth()
                    if blocking is None:
                        content = _file_chunks(path, offset, length)
                        part = await self._send(
                            "upload", "PUT", url, auth=auth, headers=part_headers, content=content
                        )
                    else:
                        signed = {**part_headers, "Authorization": auth}
                        part = await self._put_part(blocking, url, signed, path, offset, length)
                etags[number] = part_etag(part)
            except RaybatchError as exc:
                # Recorded rather than raised: a task group would wrap it in an ExceptionGroup.
                failures.append(exc)
                group.cancel_scope.cancel()

        try:
            async with anyio.create_task_group() as group:
                for number in range(1, math.ceil(size / part_size) + 1):
                    group.start_soon(put, number, group)
        finally:
            if blocking is not None:
                blocking.close()
        if failures:
            raise failures[0]
        parts = [{"partNumber": n, "etag": etags[n]} for n in sorted(etags)]
        await self._send(
            "upload",
            "POST",
            f"{base}/complete",
            auth=await self._cdn_auth(),
            json={"parts": parts},
        )
        return access_url

    async def _put_part(
        self,
        blocking: _BlockingParts,
        url: str,
        headers: dict[str, str],
        path: Path,
        offset: int,
        length: int,
    ) -> httpx.Response:
        """One part PUT on the blocking client, answered and classified as ``_send`` does."""
        try:
            response = await blocking.put(url, headers, path, offset, length)
        except httpx.RequestError as exc:
            raise self._scrub(transport_error(exc, "upload")) from exc
        if response.is_success:
            return response
        error = self._classified(response, "upload")
        if response.status_code in (401, 403):
            self._token = None  # a token the CDN refuses is not reused
        raise error

    async def _cdn_auth(self) -> str:
        """The CDN ``Authorization`` value, fetched once and reused until near its expiry."""
        return (await self._cdn_token()).header

    async def _cdn_token(self) -> CdnToken:
        async with self._token_lock:
            if self._token is None or not self._token.fresh():
                self._token = await self._fetch_token()
            return self._token

    async def _fetch_token(self) -> CdnToken:
        response = await self._send(
            "token",
            "POST",
            f"{self.config.rest_url}/storage/auth/token",
            params={"storage_type": "fal-cdn-v3"},
            json={},
        )
        body = json_object(response, "token")
        header = f"{body.get('token_type') or 'Bearer'} {string_field(body, 'token', 'token')}"
        try:
            expires = datetime.fromisoformat(str(body.get("expires_at")))
        except ValueError:
            expires = datetime.now(UTC)  # unknown lifetime: use it for this call only
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        base_url = body.get("base_url")
        base = base_url.rstrip("/") if isinstance(base_url, str) and base_url else None
        return CdnToken(header, expires, base)

    # -- the one place requests are sent and failures classified ---------------------------


async def _file_chunks(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
    """``_file_chunks_blocking``, each read in a worker thread."""
    chunks = _file_chunks_blocking(path, offset, length)
    try:
        while (chunk := await anyio.to_thread.run_sync(next, chunks, None)) is not None:
            yield chunk
    finally:
        chunks.close()


def _file_chunks_blocking(path: Path, offset: int, length: int) -> Generator[bytes, None, None]:
    """``length`` bytes of ``path`` from ``offset``, 1 MiB at a time (blocking)."""
    try:
        with path.open("rb", buffering=0) as file:
            file.seek(offset)
            left = length
            while left:
                chunk = file.read(min(_READ_CHUNK, left))
                if not chunk:
                    raise LocalFileError(
                        f"the local file {path} shrank while it was being uploaded (changed"
                        " since the plan was made?); nothing was sent to fal"
                    )
                left -= len(chunk)
                yield chunk
    except OSError as exc:
        raise local_read_error(path, exc) from exc


def local_read_error(path: Path, exc: OSError) -> LocalFileError:
    """A local input that cannot be read, named and said to be local (not fal's doing)."""
    return LocalFileError(
        f"cannot read the local file {path}: {exc.strerror or exc} (moved, renamed or"
        " deleted since the plan was made?); nothing was sent to fal"
    )


class _BlockingParts:
    """A multipart upload's part PUTs, on a blocking httpx client in worker threads.

    The asyncio send path (an h11 event, a transport write and a drain per MiB sent, and a
    thread hop per MiB read) cost the client ~1.9 s of CPU per GiB against ~0.8 s for
    blocking sends, and on a 2-core machine the server needs that core (see bench/).
    A cancelled PUT shuts the upload's sockets down, which ends a blocked send or read at
    once, and leaves its thread to finish alone: it only reads the local file.
    """

    def __init__(self, timeout: httpx.Timeout, ssl_context: ssl.SSLContext) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        self._http = httpx.Client(
            timeout=timeout, headers=headers, follow_redirects=False, verify=ssl_context
        )
        self._guard = SocketGuard()

    async def put(
        self, url: str, headers: dict[str, str], path: Path, offset: int, length: int
    ) -> httpx.Response:
        """PUT ``length`` bytes of ``path`` from ``offset`` to ``url``."""
        content = _file_chunks_blocking(path, offset, length)
        request = self._http.build_request(
            "PUT", url, headers=headers, content=content, extensions={"trace": self._guard.trace}
        )

        def send() -> httpx.Response:
            try:
                return self._http.send(request)
            finally:
                # httpx does not close a request's content iterator when the send fails
                # (a cancel shuts the socket): close it here, in the thread that runs it.
                content.close()

        try:
            return await anyio.to_thread.run_sync(send, abandon_on_cancel=True)
        except anyio.get_cancelled_exc_class():
            self.stop()
            raise

    def stop(self) -> None:
        """Shut every socket of this upload down (from any thread)."""
        self._guard.stop()

    def close(self) -> None:
        """Stop, then close the client."""
        self.stop()
        self._http.close()
