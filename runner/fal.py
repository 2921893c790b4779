"""The fal HTTP client: queue (submit, status, stream, result, cancel) and storage upload.

Stateless apart from a cached CDN upload token. It never retries, not even the transport
(``retries=0``): the retry policy lives in the scheduler and is driven by the error class,
so every failure leaves here as exactly one :mod:`runner.errors` class, decided in one
place: :func:`_transport_error` for requests that got no answer, :func:`_classify` for
HTTP answers. ``op`` below is submit, status, result, cancel, token (CDN token) or upload.

=======================================================  ==================================
what happened                                            raised
=======================================================  ==================================
connect error / connect timeout / pool timeout           TransportError (never sent)
any other transport error or timeout                     submit: SubmitUnconfirmed;
                                                         others: TransportError
401 / 403                                                AuthError (upload: CDN token)
429                                                      RateLimited(retry_after)
408 / 409                                                TransportError
504 with ``X-Fal-Request-Timeout-Type: user``            RemoteJobFailed
502 / 504 to a submit (the proxy lost the answer)        SubmitUnconfirmed
404 ``{"status": "NOT_FOUND"}``                          result: ResultExpired; status:
                                                         RequestLost; cancel: "not_found"
moderation named in a 4xx's ``detail``/``error_type``    ContentModerated
400 / 422 with a ``detail`` list                         InputRejected ("field: msg; ...")
result error with ``error_type`` (body or header)        RETRYABLE_ERROR_TYPES:
                                                         RemoteJobError; moderation:
                                                         ContentModerated; bad_request,
                                                         client_cancelled, unknown 4xx:
                                                         RemoteJobFailed; unknown 5xx:
                                                         RemoteJobError
result error with ``X-Fal-Retryable: true|false``       RemoteJobError / RemoteJobFailed
other 5xx                                                ServiceUnavailable (says whether
                                                         it looked like fal's ingress)
other 4xx                                                submit/token/upload: InputRejected;
                                                         result: RemoteJobFailed;
                                                         status/cancel: RequestLost
2xx with malformed JSON or missing fields                submit: SubmitUnconfirmed (unless
                                                         x-fal-request-id names it);
                                                         others: ServiceUnavailable
=======================================================  ==================================

``result()`` is only called once a status said COMPLETED, so a 404 NOT_FOUND there means
the result's retention ran out: it raises ``ResultExpired`` itself (no flag needed).

The key is sent only to the configured queue and REST origins, is excluded from every
repr, and is scrubbed from every message this module raises.
"""

from __future__ import annotations

import email.utils
import functools
import importlib.metadata
import json
import math
import os
import re
import ssl
from collections.abc import AsyncIterator, Generator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import quote

import anyio
import httpx
from anyio.abc import TaskGroup

from .errors import (
    AuthError,
    ContentModerated,
    InputRejected,
    ManifestError,
    RateLimited,
    RaybatchError,
    RemoteJobError,
    RemoteJobFailed,
    RequestLost,
    ResultExpired,
    ServiceUnavailable,
    SubmitUnconfirmed,
    TransportError,
    UnsafeOutput,
)
from .socket_guard import SocketGuard

__all__ = (
    "RETRYABLE_ERROR_TYPES",
    "FalClient",
    "FalConfig",
    "Result",
    "Status",
    "Submission",
    "classify_completed",
    "parse_retry_after",
)

Op = Literal["submit", "status", "result", "cancel", "token", "upload"]
State = Literal["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]

#: ``error_type`` values after which a new attempt may well succeed (fal's request errors).
RETRYABLE_ERROR_TYPES = frozenset(
    {
        "request_timeout",
        "startup_timeout",
        "runner_scheduling_failure",
        "runner_connection_timeout",
        "runner_disconnected",
        "runner_connection_refused",
        "runner_connection_error",
        "runner_incomplete_response",
        "runner_server_error",
        "internal_error",
        "client_disconnected",
    }
)
_PERMANENT_ERROR_TYPES = frozenset({"bad_request", "client_cancelled"})
_MODERATION = re.compile(r"moderat|content[ _-]?polic|nsfw", re.IGNORECASE)
RETRY_AFTER_CAP = 300.0
MULTIPART_THRESHOLD = 100 * 1024 * 1024
#: fal_client's part size (``MULTIPART_CHUNK_SIZE``, fal-client 1.0.3): above the 5 MiB
#: every part but the last must have on S3-style stores (fal-protocol update 2026-12-04).
PART_SIZE = 10 * 1024 * 1024
#: S3's part-count limit: bigger files get bigger parts (rounded up to whole MiB).
MAX_PARTS = 10_000
PART_CONCURRENCY = 4
_READ_CHUNK = 1024 * 1024
_MIB = 1024 * 1024
_TOKEN_MARGIN = timedelta(seconds=60)
#: Idle connections kept for submits, results and uploads (status streams: all of them).
_REQUEST_KEEPALIVE = 4
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LEGACY_ID = re.compile(r"(\d+)-([A-Za-z0-9][A-Za-z0-9._-]*)")
_NAMESPACES = frozenset({"workflows", "comfy"})

try:
    _VERSION = importlib.metadata.version("raybatch")
except importlib.metadata.PackageNotFoundError:  # running from a checkout
    _VERSION = "dev"
USER_AGENT = f"raybatch/{_VERSION}"


@dataclass(frozen=True)
class FalConfig:
    """Where fal lives and the key to use; the key is never part of any repr."""

    key: str = field(repr=False)
    queue_url: str = "https://queue.fal.run"
    rest_url: str = "https://rest.fal.ai"
    cdn_url: str = "https://v3.fal.media"

    def __post_init__(self) -> None:
        for name in ("queue_url", "rest_url", "cdn_url"):
            url = getattr(self, name)
            if not url.startswith(("http://", "https://")):
                raise ManifestError(f"{name} must be an http(s) URL, not {url!r}")
            object.__setattr__(self, name, url.rstrip("/"))

    @classmethod
    def from_env(cls, fal_url: str | None = None) -> FalConfig:
        """The key from ``FAL_KEY`` (or ``FAL_KEY_ID:FAL_KEY_SECRET``), as fal's clients read it.

        ``fal_url`` (a running emulator) replaces all three base URLs. Raises
        ``AuthError`` when no key is set.
        """
        key = os.environ.get("FAL_KEY", "").strip()
        if not key:
            key_id = os.environ.get("FAL_KEY_ID", "").strip()
            secret = os.environ.get("FAL_KEY_SECRET", "").strip()
            key = f"{key_id}:{secret}" if key_id and secret else ""
        if not key:
            raise AuthError("no fal API key: set FAL_KEY (or FAL_KEY_ID and FAL_KEY_SECRET)")
        return cls.single_origin(fal_url, key) if fal_url else cls(key)

    @classmethod
    def single_origin(cls, url: str, key: str) -> FalConfig:
        """Queue, REST and CDN all at ``url`` (how the emulator serves them)."""
        return cls(key, queue_url=url, rest_url=url, cdn_url=url)


@dataclass(frozen=True)
class Submission:
    """What fal answered to a submit: the request id and where to ask about it."""

    request_id: str
    status_url: str
    response_url: str
    cancel_url: str
    queue_position: int | None


@dataclass(frozen=True)
class Status:
    """One status report. COMPLETED may still carry ``error``/``error_type`` (see
    :func:`classify_completed`); there is no FAILED state at fal."""

    state: State
    queue_position: int | None
    logs: list[dict[str, Any]] | None
    error: str | None
    error_type: str | None
    metrics: dict[str, Any]


@dataclass(frozen=True)
class Result:
    """A finished request's output, as the model returned it."""

    data: dict[str, Any]
    request_id: str | None
    billable_units: float | None


@dataclass(frozen=True)
class _CdnToken:
    header: str = field(repr=False)
    expires_at: datetime
    #: The storage origin the token is for (its ``base_url``); fal's client uploads there.
    base_url: str | None = None

    def fresh(self) -> bool:
        return datetime.now(UTC) + _TOKEN_MARGIN < self.expires_at


def classify_completed(status: Status) -> RaybatchError | None:
    """The error a COMPLETED status reports, or ``None`` when the result fetch must decide.

    ``None`` covers success, an ``error`` without ``error_type`` (a 422 validation error
    shows only at result fetch) and an unknown ``error_type`` (the result's HTTP status
    then tells a retryable 5xx from a permanent 4xx).
    """
    if status.state != "COMPLETED" or not status.error_type:
        return None
    cls = _error_type_class(status.error_type)
    if cls is None:
        return None
    return cls(
        f"fal request failed: {status.error or status.error_type} ({status.error_type})",
        error_type=status.error_type,
    )


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now (delta-seconds or HTTP-date), capped at 300 s."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The one TLS context every client of a run shares: each new one loads the CA bundle
    again (50-100 ms here, several per run start)."""
    return httpx.create_ssl_context()


class FalClient:
    """fal's queue and storage API over httpx (requests and status streams in separate
    connection pools); never retries."""

    def __init__(
        self,
        config: FalConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_connections: int = 200,
    ) -> None:
        self.config = config
        # No total deadline exists in httpx; ``timeout`` bounds each read/write/pool wait,
        # which is what keeps a stalled upload or stream from hanging forever.
        self._timeout = httpx.Timeout(timeout, connect=min(10.0, timeout))

        def client(pool: httpx.AsyncBaseTransport | None, keepalive: int) -> httpx.AsyncClient:
            limits = httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=keepalive
            )
            return httpx.AsyncClient(
                transport=pool
                or httpx.AsyncHTTPTransport(retries=0, limits=limits, verify=tls_context()),
                verify=tls_context(),
                timeout=self._timeout,
                follow_redirects=False,
                headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
            )

        # Two pools, because httpcore walks every connection of a pool, with a socket check
        # per idle one (and quadratically), whenever a request starts or ends:
        # - status streams hold their connection for a job's whole run and are replaced one
        #   for one, so their pool keeps every connection alive;
        # - submits, results, uploads come in bursts (a whole slot's worth at start-up);
        #   keeping every burst connection alive made each later request check ~concurrency
        #   idle sockets, each through an anyio socket-attribute lookup. A few idle ones are
        #   enough to reuse: on 1k jobs of 0.05-0.2 s, 4 kept cost 11-12.6 CPU s against
        #   13.3-14.3 s for 16 (8: 13.4, 2: 12.7; measured 2026-11-24).
        self._http = client(transport, min(max_connections, _REQUEST_KEEPALIVE))
        self._streams = self._http if transport is not None else client(None, max_connections)
        self._key_origins = {_origin(config.queue_url), _origin(config.rest_url)}
        # "scheme://host[:port]/" of each: a URL starting with one has that origin, which
        # spares parsing the URL of every queue request (3 % of a short job's CPU).
        self._key_prefixes = tuple(
            f"{scheme}://{host}" + (f":{port}" if port else "") + "/"
            for scheme, host, port in self._key_origins
        )
        self._token: _CdnToken | None = None
        self._token_lock = anyio.Lock()

    async def aclose(self) -> None:
        """Close the connection pools."""
        await self._http.aclose()
        if self._streams is not self._http:
            await self._streams.aclose()

    async def __aenter__(self) -> FalClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- queue -----------------------------------------------------------------------------

    def request_urls(self, endpoint: str, request_id: str) -> tuple[str, str, str]:
        """(status, response, cancel) URLs of a request, rebuilt by fal's owner/app rule.

        For resuming when the URLs fal returned were not recorded: fal routes
        ``/requests/`` under owner/app only (plus a ``workflows``/``comfy`` namespace),
        and a legacy ``<digits>-<alias>`` id means ``<digits>/<alias>``.
        """
        app, _ = _parse_endpoint(endpoint)
        base = f"{self.config.queue_url}/{app}/requests/{quote(request_id, safe='')}"
        return f"{base}/status", base, f"{base}/cancel"

    async def submit(
        self,
        endpoint: str,
        arguments: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Submission:
        """POST the input to fal's queue, once. ``headers`` adds fal's optional X-Fal-* ones.

        Never re-sent: an answer lost after the POST may have left is ``SubmitUnconfirmed``.
        """
        _, full = _parse_endpoint(endpoint)
        extra = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        response = await self._send(
            "submit", "POST", f"{self.config.queue_url}/{full}", headers=extra, json=arguments
        )
        body = _json_or_none(response)
        body = body if isinstance(body, dict) else {}
        request_id = body.get("request_id") or response.headers.get("x-fal-request-id")
        if not isinstance(request_id, str) or not request_id:
            raise SubmitUnconfirmed(
                f"fal accepted the submit (HTTP {response.status_code}) but its answer named"
                " no request id"
            )
        urls = tuple(body.get(k) for k in ("status_url", "response_url", "cancel_url"))
        if not all(isinstance(u, str) and self._may_send_key(u) for u in urls):
            # Missing, or on a host we were not told about (we would send it our key).
            urls = self.request_urls(endpoint, request_id)
        status_url, response_url, cancel_url = cast(tuple[str, str, str], urls)
        return Submission(
            request_id, status_url, response_url, cancel_url, _int(body.get("queue_position"))
        )

    async def status(self, status_url: str, *, logs: bool = False) -> Status:
        """One status poll (HTTP 202 while queued or running, 200 when COMPLETED)."""
        response = await self._send(
            "status", "GET", status_url, params={"logs": "1" if logs else "0"}
        )
        return _parse_status(_json_object(response, "status"))

    async def stream_status(self, status_url: str, *, logs: bool = False) -> AsyncIterator[Status]:
        """Statuses from fal's SSE stream until COMPLETED (yielded last, after the response
        is closed, so a consumer that stops there leaves nothing open).

        A read idle for the client timeout, or a stream that ends early, is
        ``TransportError``: fall back to polling. Wrap in ``contextlib.aclosing`` to stop
        early.
        """
        url = f"{status_url.rstrip('/')}/stream"
        final: Status | None = None
        headers = {"Accept": "text/event-stream", "Authorization": self._key_auth(url)}
        try:
            async with self._streams.stream(
                "GET", url, params={"logs": "1" if logs else "0"}, headers=headers
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise self._classified(response, "status")
                parser = _SSEParser()
                async for text in response.aiter_text():
                    for data in parser.feed(text):
                        status = _parse_event(data)
                        if status is None:
                            continue
                        if status.state == "COMPLETED":
                            final = status
                            break
                        yield status
                    if final is not None:
                        break
        except httpx.RequestError as exc:
            raise self._scrub(_transport_error(exc, "status")) from exc
        if final is None:
            raise TransportError("fal closed the status stream before COMPLETED")
        yield final

    async def result(self, response_url: str) -> Result:
        """The output of a COMPLETED request; ``billable_units`` from x-fal-billable-units."""
        response = await self._send("result", "GET", response_url)
        if response.status_code != 200:
            raise ServiceUnavailable(f"fal's result is not ready (HTTP {response.status_code})")
        units = response.headers.get("x-fal-billable-units")
        try:
            billable = float(units) if units is not None else None
        except ValueError:
            billable = None
        return Result(
            _json_object(response, "result"), response.headers.get("x-fal-request-id"), billable
        )

    async def cancel(
        self, cancel_url: str
    ) -> Literal["requested", "already_completed", "not_found"]:
        """Ask fal to cancel; a running request may still complete (best effort at fal)."""
        response = await self._send("cancel", "PUT", cancel_url, allow=(400, 404))
        if response.is_success:
            return "requested"
        body = _json_or_none(response)
        state = body.get("status") if isinstance(body, dict) else None
        if response.status_code == 400 and state == "ALREADY_COMPLETED":
            return "already_completed"
        if response.status_code == 404 and state == "NOT_FOUND":
            return "not_found"
        raise self._classified(response, "cancel")

    # -- storage ---------------------------------------------------------------------------

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
            raise InputRejected(f"cannot read {path}: {exc.strerror}") from exc
        headers = {"Content-Type": content_type, "X-Fal-File-Name": _header_safe(path.name)}
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
        return _string_field(_json_object(response, "upload"), "access_url", "upload")

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
        body = _json_object(response, "upload")
        access_url = _string_field(body, "access_url", "upload")
        base = f"{access_url}/multipart/{_string_field(body, 'uploadId', 'upload')}"
        etags: dict[int, str] = {}
        failures: list[RaybatchError] = []
        limiter = anyio.CapacityLimiter(PART_CONCURRENCY)
        # A transport handed to __init__ (the tests' scripted fal) serves asyncio only; it
        # is also the one case where both pools are the same client. (In a thread: a new
        # client loads the CA bundle, ~30 ms the event loop should not wait.)
        blocking = None
        if self._streams is not self._http:
            blocking = await anyio.to_thread.run_sync(_BlockingParts, self._timeout)

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
                etags[number] = _part_etag(part)
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
            raise self._scrub(_transport_error(exc, "upload")) from exc
        if response.is_success:
            return response
        error = self._classified(response, "upload")
        if response.status_code in (401, 403):
            self._token = None  # a token the CDN refuses is not reused
        raise error

    async def _cdn_auth(self) -> str:
        """The CDN ``Authorization`` value, fetched once and reused until near its expiry."""
        return (await self._cdn_token()).header

    async def _cdn_token(self) -> _CdnToken:
        async with self._token_lock:
            if self._token is None or not self._token.fresh():
                self._token = await self._fetch_token()
            return self._token

    async def _fetch_token(self) -> _CdnToken:
        response = await self._send(
            "token",
            "POST",
            f"{self.config.rest_url}/storage/auth/token",
            params={"storage_type": "fal-cdn-v3"},
            json={},
        )
        body = _json_object(response, "token")
        header = f"{body.get('token_type') or 'Bearer'} {_string_field(body, 'token', 'token')}"
        try:
            expires = datetime.fromisoformat(str(body.get("expires_at")))
        except ValueError:
            expires = datetime.now(UTC)  # unknown lifetime: use it for this call only
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=UTC)
        base_url = body.get("base_url")
        base = base_url.rstrip("/") if isinstance(base_url, str) and base_url else None
        return _CdnToken(header, expires, base)

    # -- the one place requests are sent and failures classified ---------------------------

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
        """Send once; return a 2xx (or an ``allow``-ed status), else raise its class."""
        all_headers = {**(headers or {}), "Authorization": auth or self._key_auth(url)}
        try:
            response = await self._http.request(method, url, headers=all_headers, **kwargs)
        except httpx.RequestError as exc:
            raise self._scrub(_transport_error(exc, op)) from exc
        if response.is_success or response.status_code in allow:
            return response
        error = self._classified(response, op)
        if op == "upload" and response.status_code in (401, 403):
            self._token = None  # a token the CDN refuses is not reused
        raise error

    def _key_auth(self, url: str) -> str:
        if not self._may_send_key(url):
            raise UnsafeOutput(f"refusing to send the fal key to {_origin_text(url)}")
        return f"Key {self.config.key}"

    def _may_send_key(self, url: str) -> bool:
        if url.startswith(self._key_prefixes):
            return True
        try:
            return _origin(url) in self._key_origins
        except httpx.InvalidURL:
            return False

    def _classified(self, response: httpx.Response, op: Op) -> RaybatchError:
        return self._scrub(_classify(response, op))

    def _scrub(self, error: RaybatchError) -> RaybatchError:
        """Blank any secret a server echoed into an error's text (defence in depth)."""
        secrets = [self.config.key, *self.config.key.split(":")]
        if self._token is not None:
            secrets.append(self._token.header.split(" ", 1)[-1])
        secrets = [s for s in secrets if len(s) >= 8]

        def clean(text: str) -> str:
            for secret in secrets:
                text = text.replace(secret, "[redacted]")
            return text

        error.message = clean(error.message)
        error.args = (error.message,)
        error.error_type = error.error_type and clean(error.error_type)
        error.request_id = error.request_id and clean(error.request_id)
        return error


# -- classification ------------------------------------------------------------------------


def _transport_error(exc: httpx.RequestError, op: Op) -> RaybatchError:
    """A request that got no HTTP answer. Only connect-phase failures prove it was not sent."""
    reason = f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__
    never_sent = isinstance(
        exc,
        httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.UnsupportedProtocol,
    )
    if op == "submit" and not never_sent:
        return SubmitUnconfirmed(f"submit may have reached fal but no answer came ({reason})")
    return TransportError(f"fal {op} request failed in transit ({reason})")


def _classify(response: httpx.Response, op: Op) -> RaybatchError:
    """The error class of a non-2xx answer (see the module docstring's table)."""
    code = response.status_code
    body = _json_or_none(response)
    fields = body if isinstance(body, dict) else {}
    detail = fields.get("detail")
    body_type = fields.get("error_type")
    error_type = body_type if isinstance(body_type, str) else None
    error_type = error_type or response.headers.get("x-fal-error-type")
    request_id = response.headers.get("x-fal-request-id")
    kw: dict[str, Any] = {"status_code": code, "request_id": request_id, "error_type": error_type}
    text = _detail_text(detail) or (error_type or "")
    said = f": {text}" if text else ""

    if code in (401, 403):
        what = (
            "fal's CDN rejected the upload token" if op == "upload" else "fal rejected the API key"
        )
        return AuthError(f"{what} (HTTP {code})", **kw)
    if code == 429:
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return RateLimited(f"fal is rate limiting ({op}, HTTP 429)", retry_after=retry_after, **kw)
    if code in (408, 409):
        return TransportError(f"fal {op} answered HTTP {code}; worth another try{said}", **kw)
    if code == 504 and response.headers.get("x-fal-request-timeout-type") == "user":
        return RemoteJobFailed(
            "fal dropped the request: its X-Fal-Request-Timeout start deadline passed", **kw
        )
    if code == 404 and fields.get("status") == "NOT_FOUND":
        if op == "result":
            return ResultExpired("fal no longer holds this request's result (404 NOT_FOUND)", **kw)
        return RequestLost("fal does not know this request (404 NOT_FOUND)", **kw)
    if 400 <= code < 500 and _mentions_moderation(detail, error_type):
        return ContentModerated(f"fal's moderation refused the input{said}", **kw)
    if code in (400, 422) and isinstance(detail, list):
        return InputRejected(f"fal rejected the input{said}", **kw)
    if op == "result" and error_type:
        cls = _error_type_class(error_type) or (RemoteJobError if code >= 500 else RemoteJobFailed)
        return cls(f"fal request failed{said} ({error_type})", **kw)
    retryable = response.headers.get("x-fal-retryable", "").lower()
    if op == "result" and retryable in ("true", "false"):
        cls = RemoteJobError if retryable == "true" else RemoteJobFailed
        return cls(f"fal request failed (HTTP {code}){said}", **kw)
    if code >= 500:
        ingress = request_id is None and "nginx" in response.text.lower()
        source = "fal's ingress (nginx, no request id)" if ingress else "fal"
        if op == "submit" and code in (502, 504):
            # A gateway error means the proxy lost the queue's answer, not that the queue
            # refused: the request may exist (and bill) all the same.
            return SubmitUnconfirmed(f"{source} answered HTTP {code} to submit{said}", **kw)
        return ServiceUnavailable(f"{source} answered HTTP {code} to {op}{said}", **kw)
    if 400 <= code < 500:
        message = f"fal refused the {op} (HTTP {code}){said}"
        if op == "result":
            return RemoteJobFailed(message, **kw)
        if op in ("status", "cancel"):
            return RequestLost(message, **kw)
        return InputRejected(message, **kw)
    return ServiceUnavailable(f"fal answered {op} with unexpected HTTP {code}", **kw)


def _error_type_class(error_type: str) -> type[RaybatchError] | None:
    """The class for a known fal ``error_type``; ``None`` when unknown."""
    if _MODERATION.search(error_type):
        return ContentModerated
    if error_type in RETRYABLE_ERROR_TYPES:
        return RemoteJobError
    if error_type in _PERMANENT_ERROR_TYPES:
        return RemoteJobFailed
    return None


def _mentions_moderation(detail: object, error_type: str | None) -> bool:
    """Whether fal's own words (error types and messages, not the echoed input) say moderation."""
    words = [error_type or ""]
    if isinstance(detail, str):
        words.append(detail)
    elif isinstance(detail, list):
        words += [f"{e.get('type')} {e.get('msg')}" for e in detail if isinstance(e, dict)]
    return any(_MODERATION.search(w) for w in words)


def _detail_text(detail: object) -> str:
    """fal's ``detail`` made readable: ``prompt: field required; ...`` (loc minus "body")."""
    if isinstance(detail, str):
        return detail[:500]
    if not isinstance(detail, list):
        return ""
    parts = []
    for entry in detail:
        if not isinstance(entry, dict):
            parts.append(str(entry))
            continue
        loc = entry.get("loc")
        where = ".".join(str(p) for p in loc if p != "body") if isinstance(loc, list) else ""
        msg = str(entry.get("msg") or entry.get("type") or "invalid")
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)[:500]


# -- parsing -------------------------------------------------------------------------------


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None


def _json_object(response: httpx.Response, op: Op) -> dict[str, Any]:
    body = _json_or_none(response)
    if not isinstance(body, dict):
        raise ServiceUnavailable(
            f"fal's {op} answer was not a JSON object ({len(response.content)} bytes)",
            status_code=response.status_code,
        )
    return body


def _string_field(body: Mapping[str, Any], name: str, op: Op) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise ServiceUnavailable(f"fal's {op} answer has no {name!r}")
    return value


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _parse_status(body: Mapping[str, Any]) -> Status:
    state = body.get("status")
    if state not in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"):
        raise ServiceUnavailable(f"fal sent an unknown request status {str(state)[:40]!r}")
    logs = body.get("logs")
    metrics = body.get("metrics")
    error, error_type = body.get("error"), body.get("error_type")
    return Status(
        state=cast(State, state),
        queue_position=_int(body.get("queue_position")),
        logs=[e for e in logs if isinstance(e, dict)] if isinstance(logs, list) else None,
        error=str(error) if error else None,
        error_type=str(error_type) if error_type else None,
        metrics=metrics if isinstance(metrics, dict) else {},
    )


def _parse_event(data: str) -> Status | None:
    """An SSE event's status; ``None`` for an empty or status-less event (keep-alive)."""
    if not data.strip():
        return None
    try:
        body = json.loads(data)
    except ValueError as exc:
        raise ServiceUnavailable("fal's status stream sent malformed JSON") from exc
    if not isinstance(body, dict) or "status" not in body:
        return None
    return _parse_status(body)


class _SSEParser:
    """The ``data:`` part of server-sent events, fed text as it arrives in any split.

    Comments (``:``), ``event:``/``id:``/``retry:`` fields are skipped; lines end in LF or
    CRLF (a lone CR, legal but unseen in practice, is not treated as a line end).
    """

    def __init__(self) -> None:
        self._pending = ""
        self._data: list[str] = []

    def feed(self, text: str) -> list[str]:
        """Add text; return the data of every event it completed."""
        *lines, self._pending = (self._pending + text).split("\n")
        events = []
        for raw in lines:
            line = raw.removesuffix("\r")
            if not line:
                if self._data:
                    events.append("\n".join(self._data))
                    self._data = []
                continue
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value.removeprefix(" "))
        return events


def _parse_endpoint(endpoint: str) -> tuple[str, str]:
    """(owner/app prefix, full id) of an endpoint id, by fal_client's ``AppId`` rule."""
    parts = endpoint.split("/")
    if not all(_SEGMENT.fullmatch(p) for p in parts):
        raise InputRejected(f"not a fal endpoint id: {endpoint[:100]!r}")
    if len(parts) == 1:
        legacy = _LEGACY_ID.fullmatch(endpoint)
        if legacy is None:
            raise InputRejected(f"not a fal endpoint id (no owner/app): {endpoint[:100]!r}")
        parts = [legacy.group(1), legacy.group(2)]
    keep = 3 if parts[0] in _NAMESPACES else 2
    if len(parts) < keep:
        raise InputRejected(f"not a fal endpoint id (namespace needs owner/app): {endpoint!r}")
    return "/".join(parts[:keep]), "/".join(parts)


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = httpx.URL(url)
    return parsed.scheme, parsed.host, parsed.port


def _origin_text(url: str) -> str:
    try:
        scheme, host, port = _origin(url)
    except httpx.InvalidURL:
        return "an invalid URL"
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def _part_etag(response: httpx.Response) -> str:
    etag = response.headers.get("etag")
    if not etag:
        body = _json_or_none(response)
        etag = body.get("etag") if isinstance(body, dict) else None
    if not isinstance(etag, str) or not etag:
        raise ServiceUnavailable("fal's CDN answered a multipart part without an ETag")
    return etag


def _header_safe(name: str) -> str:
    # httpx sends headers as ASCII; percent-encode anything else rather than fail the upload.
    return name if name.isascii() and name.isprintable() else quote(name)


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
                    raise InputRejected(f"{path} shrank while it was being uploaded")
                left -= len(chunk)
                yield chunk
    except OSError as exc:
        raise InputRejected(f"cannot read {path}: {exc.strerror}") from exc


class _BlockingParts:
    """A multipart upload's part PUTs, on a blocking httpx client in worker threads.

    The asyncio send path (an h11 event, a transport write and a drain per MiB sent, and a
    thread hop per MiB read) cost the client ~1.9 s of CPU per GiB against ~0.8 s for
    blocking sends, and on a 2-core machine the server needs that core (see bench/).
    A cancelled PUT shuts the upload's sockets down, which ends a blocked send or read at
    once, and leaves its thread to finish alone: it only reads the local file.
    """

    def __init__(self, timeout: httpx.Timeout) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        self._http = httpx.Client(
            timeout=timeout, headers=headers, follow_redirects=False, verify=tls_context()
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
