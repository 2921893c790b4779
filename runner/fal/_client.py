"""The queue half of the client: submit, status (poll and stream), result, cancel,
and the one place a request is sent and its failure classified."""

from __future__ import annotations

import ssl
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Literal, cast
from urllib.parse import quote

import anyio
import httpx

from ..errors import (
    RaybatchError,
    ServiceUnavailable,
    SubmitUnconfirmed,
    TransportError,
    UnsafeOutput,
)
from ..net import tls_context
from ._classify import classify, transport_error
from ._config import USER_AGENT, FalConfig
from ._storage import CdnToken, StorageOps
from ._wire import (
    Op,
    Result,
    SSEParser,
    Status,
    Submission,
    int_or_none,
    json_object,
    json_or_none,
    origin,
    origin_text,
    parse_endpoint,
    parse_event,
    parse_status,
)

#: Idle connections kept for submits, results and uploads (status streams: all of them).
_REQUEST_KEEPALIVE = 4


class FalClient(StorageOps):
    """fal's queue and storage API over httpx (requests and status streams in separate
    connection pools); never retries."""

    def __init__(
        self,
        config: FalConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 30.0,
        max_connections: int = 200,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self._ssl = ssl_context or tls_context()
        # No total deadline exists in httpx; ``timeout`` bounds each read/write/pool wait,
        # which is what keeps a stalled upload or stream from hanging forever.
        self._timeout = httpx.Timeout(timeout, connect=min(10.0, timeout))

        def client(pool: httpx.AsyncBaseTransport | None, keepalive: int) -> httpx.AsyncClient:
            limits = httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=keepalive
            )
            return httpx.AsyncClient(
                transport=pool
                or httpx.AsyncHTTPTransport(retries=0, limits=limits, verify=self._ssl),
                verify=self._ssl,
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
        self._key_origins = {origin(config.queue_url), origin(config.rest_url)}
        if config.backup_url is not None:
            self._key_origins.add(origin(config.backup_url))
        # "scheme://host[:port]/" of each: a URL starting with one has that origin, which
        # spares parsing the URL of every queue request (3 % of a short job's CPU).
        self._key_prefixes = tuple(
            f"{scheme}://{host}" + (f":{port}" if port else "") + "/"
            for scheme, host, port in self._key_origins
        )
        self._token: CdnToken | None = None
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
        app, _ = parse_endpoint(endpoint)
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
        _, full = parse_endpoint(endpoint)
        extra = {k: v for k, v in (headers or {}).items() if k.lower() != "authorization"}
        response = await self._send(
            "submit", "POST", f"{self.config.queue_url}/{full}", headers=extra, json=arguments
        )
        body = json_or_none(response)
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
            request_id,
            status_url,
            response_url,
            cancel_url,
            int_or_none(body.get("queue_position")),
        )

    async def status(self, status_url: str, *, logs: bool = False) -> Status:
        """One status poll (HTTP 202 while queued or running, 200 when COMPLETED)."""
        response = await self._send(
            "status", "GET", status_url, params={"logs": "1" if logs else "0"}
        )
        return parse_status(json_object(response, "status"))

    async def stream_status(
        self, status_url: str, *, logs: bool = False, idle: float | None = None
    ) -> AsyncGenerator[Status, None]:
        """Statuses from fal's SSE stream until COMPLETED (yielded last, after the response
        is closed, so a consumer that stops there leaves nothing open).

        A stream silent for ``idle`` seconds (default: the client timeout), sending neither
        events nor pings, or one that ends early, is ``TransportError``: fall back to
        polling. A refused open (say, 429 for too many streams) is its classified error.
        Wrap in ``contextlib.aclosing`` to stop early.
        """
        url = f"{status_url.rstrip('/')}/stream"
        final: Status | None = None
        headers = {"Accept": "text/event-stream", "Authorization": self._key_auth(url)}
        timeout = self._timeout
        if idle is not None:
            timeout = httpx.Timeout(
                connect=timeout.connect, read=idle, write=timeout.write, pool=timeout.pool
            )
        try:
            async with self._streams.stream(
                "GET",
                url,
                params={"logs": "1" if logs else "0"},
                headers=headers,
                timeout=timeout,
            ) as response:
                if not response.is_success:
                    await response.aread()
                    raise self._classified(response, "status")
                parser = SSEParser()
                async for text in response.aiter_text():
                    for data in parser.feed(text):
                        status = parse_event(data)
                        if status is None:
                            continue
                        if status.state == "COMPLETED":
                            final = status
                            break
                        yield status
                    if final is not None:
                        break
        except httpx.RequestError as exc:
            raise self._scrub(transport_error(exc, "status")) from exc
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
            json_object(response, "result"), response.headers.get("x-fal-request-id"), billable
        )

    async def cancel(
        self, cancel_url: str
    ) -> Literal["requested", "already_completed", "not_found"]:
        """Ask fal to cancel; a running request may still complete (best effort at fal)."""
        response = await self._send("cancel", "PUT", cancel_url, allow=(400, 404))
        if response.is_success:
            return "requested"
        body = json_or_none(response)
        state = body.get("status") if isinstance(body, dict) else None
        if response.status_code == 400 and state == "ALREADY_COMPLETED":
            return "already_completed"
        if response.status_code == 404 and state == "NOT_FOUND":
            return "not_found"
        raise self._classified(response, "cancel")

    # -- storage ---------------------------------------------------------------------------

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
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            # Never sent: safe to send once to the backup host (queue calls only). If that
            # fails too, the primary's error is the one reported, as fal's client does.
            backup = self._backup_for(url)
            if backup is None:
                raise self._scrub(transport_error(exc, op)) from exc
            try:
                response = await self._http.request(method, backup, headers=all_headers, **kwargs)
            except httpx.RequestError:
                raise self._scrub(transport_error(exc, op)) from exc
        except httpx.RequestError as exc:
            raise self._scrub(transport_error(exc, op)) from exc
        if response.is_success or response.status_code in allow:
            return response
        error = self._classified(response, op)
        if op == "upload" and response.status_code in (401, 403):
            self._token = None  # a token the CDN refuses is not reused
        raise error

    def _backup_for(self, url: str) -> str | None:
        """``url`` on the backup host, for a URL on the queue origin (else None)."""
        backup, queue = self.config.backup_url, self.config.queue_url
        if backup is None or not url.startswith(queue + "/"):
            return None
        return backup + url[len(queue) :]

    def owns(self, url: str) -> bool:
        """Whether ``url`` is on the queue or REST origin this client sends its key to."""
        return self._may_send_key(url)

    def _key_auth(self, url: str) -> str:
        if not self._may_send_key(url):
            raise UnsafeOutput(f"refusing to send the fal key to {origin_text(url)}")
        return f"Key {self.config.key}"

    def _may_send_key(self, url: str) -> bool:
        if url.startswith(self._key_prefixes):
            return True
        try:
            return origin(url) in self._key_origins
        except httpx.InvalidURL:
            return False

    def _classified(self, response: httpx.Response, op: Op) -> RaybatchError:
        return self._scrub(classify(response, op))

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
