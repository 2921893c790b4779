"""The fal client: wire requests, error classification, SSE, CDN upload, key hygiene.

``httpx.MockTransport`` stands in for fal's servers here: a scripted handler makes each
status code, header and body exact, which a real server (or the emulator) would make
awkward for the rarer branches. End-to-end behaviour against the emulator lives elsewhere.
"""

from __future__ import annotations

import email.utils
import json
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from runner import fal
from runner.errors import (
    AuthError,
    ContentModerated,
    InputRejected,
    LocalFileError,
    RateLimited,
    RaybatchError,
    RemoteJobError,
    RemoteJobFailed,
    RequestLost,
    RequestRefused,
    ResultExpired,
    ServiceUnavailable,
    SubmitUnconfirmed,
    TransportError,
    UnsafeOutput,
)
from runner.fal import (
    FalClient,
    FalConfig,
    Status,
    _storage as fal_storage,
    classify_completed,
    parse_retry_after,
)

pytestmark = pytest.mark.anyio

KEY = "key-id-0123456789:secret-abcdefghijklmnop"
Q, R, C = "https://queue.test", "https://rest.test", "https://cdn.test"
ENDPOINT = "luma/agent/ray/v3.2/video-to-video"
RID = "764cabcf-b745-4b3e-ae38-1200304cf45b"
STATUS_URL = f"{Q}/luma/agent/requests/{RID}/status"
RESPONSE_URL = f"{Q}/luma/agent/requests/{RID}"
CANCEL_URL = f"{Q}/luma/agent/requests/{RID}/cancel"

Handler = Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]]


@pytest.fixture
def anyio_backend() -> str:
    """Run on asyncio only (what the CLI uses)."""
    return "asyncio"


def client_for(handler: Handler) -> FalClient:
    """A client whose every request goes to ``handler``."""
    return FalClient(
        FalConfig(KEY, queue_url=Q, rest_url=R, cdn_url=C), transport=httpx.MockTransport(handler)
    )


def answer(status: int, body: Any = None, headers: dict[str, str] | None = None) -> Handler:
    """A handler that always answers ``status`` with ``body`` (JSON unless str/bytes)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        if isinstance(body, str | bytes):
            return httpx.Response(status, content=body, headers=headers)
        return httpx.Response(status, json=body, headers=headers)

    return handler


def failing(exc_type: type[httpx.RequestError]) -> Handler:
    """A handler whose request fails in transit with ``exc_type``."""

    async def handler(request: httpx.Request) -> httpx.Response:
        raise exc_type("boom", request=request)

    return handler


# -- submit --------------------------------------------------------------------------------


async def test_submit_wire_request() -> None:
    """Submit POSTs the input to queue/<full endpoint id> with key, UA and JSON headers."""
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        seen.append(request)
        return httpx.Response(
            200,
            json={
                "request_id": RID,
                "status_url": STATUS_URL,
                "response_url": RESPONSE_URL,
                "cancel_url": CANCEL_URL,
                "queue_position": 3,
            },
        )

    async with client_for(handler) as client:
        sub = await client.submit(
            ENDPOINT,
            {"prompt": "a fox"},
            headers={"X-Fal-Request-Timeout": "600", "Authorization": "Key stolen"},
        )
    assert len(seen) == 1
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == f"{Q}/{ENDPOINT}"
    assert request.headers.get_list("authorization") == [f"Key {KEY}"]
    assert request.headers["user-agent"].startswith("raybatch/")
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-fal-request-timeout"] == "600"
    assert json.loads(request.content) == {"prompt": "a fox"}
    assert sub == fal.Submission(RID, STATUS_URL, RESPONSE_URL, CANCEL_URL, 3)


async def test_submit_rebuilds_missing_urls() -> None:
    """A submit answer with only a request id still yields usable URLs (owner/app rule)."""
    async with client_for(answer(200, {"request_id": RID})) as client:
        sub = await client.submit(ENDPOINT, {})
    assert (sub.status_url, sub.response_url, sub.cancel_url) == (
        STATUS_URL,
        RESPONSE_URL,
        CANCEL_URL,
    )
    assert sub.queue_position is None


async def test_submit_replaces_foreign_urls() -> None:
    """URLs on a host we were not configured for are replaced, so the key never goes there."""
    body = {
        "request_id": RID,
        "status_url": "https://evil.test/s",
        "response_url": RESPONSE_URL,
        "cancel_url": CANCEL_URL,
    }
    async with client_for(answer(200, body)) as client:
        sub = await client.submit(ENDPOINT, {})
    assert sub.status_url == STATUS_URL


async def test_submit_id_from_header_when_body_is_malformed() -> None:
    """A 2xx with a broken body but an x-fal-request-id is a known request, not a retry."""
    handler = answer(200, b"{not json", {"x-fal-request-id": RID})
    async with client_for(handler) as client:
        sub = await client.submit(ENDPOINT, {})
    assert sub.request_id == RID
    assert sub.response_url == RESPONSE_URL


async def test_submit_accepted_without_id_is_unconfirmed() -> None:
    """A 2xx naming no request id is ambiguous: the job may exist and bill."""
    async with client_for(answer(200, b"oops")) as client:
        with pytest.raises(SubmitUnconfirmed):
            await client.submit(ENDPOINT, {})


async def test_submit_legacy_id_is_rewritten() -> None:
    """A legacy ``<digits>-<alias>`` id is submitted as ``<digits>/<alias>``."""
    urls: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        return httpx.Response(200, json={"request_id": RID})

    async with client_for(handler) as client:
        sub = await client.submit("12345-myapp", {})
    assert urls == [f"{Q}/12345/myapp"]
    assert sub.status_url == f"{Q}/12345/myapp/requests/{RID}/status"


@pytest.mark.parametrize(
    ("exc_type", "expected"),
    [
        (httpx.ConnectError, TransportError),
        (httpx.ConnectTimeout, TransportError),
        (httpx.PoolTimeout, TransportError),
        (httpx.ReadTimeout, SubmitUnconfirmed),
        (httpx.WriteTimeout, SubmitUnconfirmed),
        (httpx.ReadError, SubmitUnconfirmed),
        (httpx.WriteError, SubmitUnconfirmed),
        (httpx.RemoteProtocolError, SubmitUnconfirmed),
    ],
)
async def test_submit_transport_errors(
    exc_type: type[httpx.RequestError], expected: type[RaybatchError]
) -> None:
    """Only connect-phase failures prove a submit was not sent (and only those go once to
    fal's backup host, as fal's client does); the rest are ambiguous, never re-POSTed."""
    hosts: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        hosts.append(request.url.host)
        raise exc_type("boom", request=request)

    async with client_for(handler) as client:
        with pytest.raises(RaybatchError) as caught:
            await client.submit(ENDPOINT, {"prompt": "x"})
    assert type(caught.value) is expected
    never_sent = exc_type in (httpx.ConnectError, httpx.ConnectTimeout)
    assert hosts == (["queue.test", "queue.falrun.com"] if never_sent else ["queue.test"])


@pytest.mark.parametrize("exc_type", [httpx.ReadTimeout, httpx.RemoteProtocolError])
async def test_other_ops_transport_errors_are_plain(exc_type: type[httpx.RequestError]) -> None:
    """Outside submit, a lost answer is a plain TransportError (safe to repeat)."""
    async with client_for(failing(exc_type)) as client:
        with pytest.raises(TransportError) as caught:
            await client.status(STATUS_URL)
    assert type(caught.value) is TransportError


def test_client_transport_never_retries() -> None:
    """The default transport is built with ``retries=0`` (retry policy is the scheduler's)."""
    client = FalClient(FalConfig(KEY))
    transport = client._http._transport
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    assert transport._pool._retries == 0


# -- classification ------------------------------------------------------------------------

NF = {"status": "NOT_FOUND"}
INGRESS = {"content": "<html><center>nginx</center></html>"}
LIST_422 = {"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "missing"}]}
MODERATED = {
    "detail": [{"loc": ["body", "prompt"], "msg": "flagged", "type": "content_policy_violation"}]
}
CASES: list[Any] = [
    pytest.param("status", 401, {}, {}, AuthError, "fal rejected the API key (HTTP 401)", id="401"),
    pytest.param("result", 403, {}, {}, AuthError, "HTTP 403", id="403"),
    pytest.param("status", 429, {"retry-after": "7"}, {}, RateLimited, "429", id="429"),
    pytest.param("submit", 408, {}, {}, TransportError, "408", id="408"),
    pytest.param("status", 409, {}, {}, TransportError, "409", id="409"),
    pytest.param("status", 500, {"x-fal-request-id": RID}, {}, ServiceUnavailable, "500", id="500"),
    pytest.param("submit", 503, {}, INGRESS, ServiceUnavailable, "ingress", id="503-ingress"),
    pytest.param("submit", 502, {}, INGRESS, SubmitUnconfirmed, "ingress", id="502-submit"),
    pytest.param("status", 502, {}, INGRESS, ServiceUnavailable, "ingress", id="502-status"),
    pytest.param("status", 503, {}, {}, ServiceUnavailable, "503", id="503"),
    pytest.param("result", 504, {}, INGRESS, ServiceUnavailable, "ingress", id="504-ingress"),
    pytest.param(
        "result",
        504,
        {"x-fal-request-timeout-type": "user"},
        {},
        RemoteJobFailed,
        "deadline",
        id="504-user-deadline",
    ),
    pytest.param("status", 404, {}, NF, RequestLost, "NOT_FOUND", id="status-404"),
    pytest.param("result", 404, {}, NF, ResultExpired, "no longer", id="result-404"),
    pytest.param("result", 422, {}, LIST_422, InputRejected, "prompt: field required", id="422"),
    pytest.param("submit", 400, {}, LIST_422, InputRejected, "prompt: field required", id="400"),
    pytest.param("result", 422, {}, MODERATED, ContentModerated, "flagged", id="moderated"),
    pytest.param(
        "result",
        400,
        {"x-fal-error-type": "bad_request"},
        {"detail": "Bad input", "error_type": "bad_request"},
        RemoteJobFailed,
        "Bad input",
        id="bad_request",
    ),
    pytest.param(
        "result",
        503,
        {},
        {"detail": "Runner disconnected", "error_type": "runner_disconnected"},
        RemoteJobError,
        "runner_disconnected",
        id="runner_disconnected",
    ),
    pytest.param(
        "result",
        504,
        {"x-fal-error-type": "request_timeout"},
        {"detail": "Request timed out"},
        RemoteJobError,
        "request_timeout",
        id="error-type-header-only",
    ),
    pytest.param(
        "result",
        499,
        {},
        {"detail": "cancelled", "error_type": "client_cancelled"},
        RemoteJobFailed,
        "client_cancelled",
        id="client_cancelled",
    ),
    pytest.param(
        "result",
        418,
        {},
        {"error_type": "brand_new"},
        RemoteJobFailed,
        "brand_new",
        id="unknown-4xx",
    ),
    pytest.param(
        "result",
        502,
        {},
        {"error_type": "brand_new"},
        RemoteJobError,
        "brand_new",
        id="unknown-5xx",
    ),
    pytest.param(
        "result",
        500,
        {"x-fal-retryable": "true", "x-fal-request-id": RID},
        {"detail": "downstream busy"},
        RemoteJobError,
        "downstream busy",
        id="x-fal-retryable",
    ),
    pytest.param(
        "result", 404, {}, {"detail": "Path /x not found"}, RemoteJobFailed, "Path", id="app-404"
    ),
    pytest.param("status", 405, {}, {}, RequestRefused, "405", id="status-405"),
    pytest.param("submit", 404, {}, {"detail": "no app"}, InputRejected, "no app", id="submit-404"),
    pytest.param("status", 202, {}, "not json", ServiceUnavailable, "not a JSON", id="malformed"),
    pytest.param("status", 200, {}, {"status": "FAILED"}, ServiceUnavailable, "FAILED", id="state"),
]


async def run_op(client: FalClient, op: str) -> object:
    """Call the client method named by ``op``."""
    if op == "submit":
        return await client.submit(ENDPOINT, {})
    if op == "status":
        return await client.status(STATUS_URL)
    return await client.result(RESPONSE_URL)


@pytest.mark.parametrize(("op", "code", "headers", "body", "expected", "text"), CASES)
async def test_classification(
    op: str,
    code: int,
    headers: dict[str, str],
    body: Any,
    expected: type[RaybatchError],
    text: str,
) -> None:
    """Each HTTP answer maps to exactly one error class with a readable message."""
    content = body.get("content") if isinstance(body, dict) else None
    handler = answer(code, content if content is not None else body, headers)
    async with client_for(handler) as client:
        with pytest.raises(RaybatchError) as caught:
            await run_op(client, op)
    assert type(caught.value) is expected
    assert text in str(caught.value)
    if code >= 300:
        assert caught.value.status_code == code


async def test_rate_limited_carries_retry_after() -> None:
    """A 429's Retry-After reaches the scheduler as ``retry_after`` seconds."""
    async with client_for(answer(429, {}, {"retry-after": "12"})) as client:
        with pytest.raises(RateLimited) as caught:
            await client.status(STATUS_URL)
    assert caught.value.retry_after == 12.0


def test_retry_after_parsing() -> None:
    """Retry-After parses as seconds or an HTTP date, capped at 300 s and floored at 0."""
    soon = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    past = email.utils.format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("1.5") == 1.5
    assert 25.0 <= (parse_retry_after(soon) or 0.0) <= 30.0
    assert parse_retry_after(past) == 0.0
    assert parse_retry_after("99999") == fal.RETRY_AFTER_CAP
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("error", "error_type", "expected"),
    [
        (None, None, None),
        ("Runner disconnected", "runner_disconnected", RemoteJobError),
        ("Timed out", "startup_timeout", RemoteJobError),
        ("Bad input", "bad_request", RemoteJobFailed),
        ("Cancelled", "client_cancelled", RemoteJobFailed),
        ("Blocked", "content_policy_violation", ContentModerated),
        ("Invalid status code: 422", None, None),
        ("Something new", "brand_new", None),
    ],
)
def test_classify_completed(
    error: str | None, error_type: str | None, expected: type[RaybatchError] | None
) -> None:
    """A COMPLETED status's error_type decides; without one (or unknown) the result fetch does."""
    status = Status("COMPLETED", None, [], error, error_type, {})
    got = classify_completed(status)
    assert (type(got) if got is not None else None) is expected


def test_classify_completed_ignores_unfinished() -> None:
    """Only COMPLETED statuses are classified."""
    assert (
        classify_completed(Status("IN_PROGRESS", None, [], "x", "runner_disconnected", {})) is None
    )


def test_retryable_set_matches_error_tree() -> None:
    """Every retryable error_type is classified RemoteJobError (one frozenset decides)."""
    for error_type in fal.RETRYABLE_ERROR_TYPES:
        status = Status("COMPLETED", None, None, "x", error_type, {})
        assert isinstance(classify_completed(status), RemoteJobError)


# -- status, result, cancel ----------------------------------------------------------------


async def test_status_parses_and_sends_logs_flag() -> None:
    """Status polls GET status_url?logs=0|1 and parse queue position, logs and metrics."""
    seen: list[httpx.URL] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(
            202,
            json={"status": "IN_PROGRESS", "logs": [{"message": "hi"}], "response_url": "x"},
        )

    async with client_for(handler) as client:
        status = await client.status(STATUS_URL, logs=True)
    assert seen[0].params["logs"] == "1"
    assert status == Status("IN_PROGRESS", None, [{"message": "hi"}], None, None, {})


async def test_result_reads_units_and_request_id() -> None:
    """The result body is returned as is, with billable units and request id from headers."""
    headers = {"x-fal-billable-units": "1.50000000", "x-fal-request-id": RID}
    async with client_for(answer(200, {"video": {"url": "u"}}, headers)) as client:
        result = await client.result(RESPONSE_URL)
    assert result == fal.Result({"video": {"url": "u"}}, RID, 1.5)


@pytest.mark.parametrize(
    ("code", "body", "outcome"),
    [
        (202, {"status": "CANCELLATION_REQUESTED"}, "requested"),
        (400, {"status": "ALREADY_COMPLETED"}, "already_completed"),
        (404, {"status": "NOT_FOUND"}, "not_found"),
    ],
)
async def test_cancel_outcomes(code: int, body: dict[str, str], outcome: str) -> None:
    """Cancel PUTs cancel_url and reports fal's three documented answers without raising."""
    methods: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        methods.append(request.method)
        return httpx.Response(code, json=body)

    async with client_for(handler) as client:
        assert await client.cancel(CANCEL_URL) == outcome
    assert methods == ["PUT"]


async def test_cancel_other_errors_raise() -> None:
    """Cancel still raises for answers outside its three outcomes (e.g. a bad key)."""
    async with client_for(answer(401, {})) as client:
        with pytest.raises(AuthError):
            await client.cancel(CANCEL_URL)


async def test_key_only_sent_to_configured_hosts() -> None:
    """A status URL on another host is refused before any request carries the key."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(200, json={"status": "COMPLETED", "logs": None})

    host = httpx.URL(Q).host
    lookalikes = [
        "https://evil.test/luma/agent/requests/x/status",
        f"https://{host}@evil.test/luma/agent/requests/x/status",  # userinfo, not the host
        f"https://{host}.evil.test/luma/agent/requests/x/status",
        f"http://{host}/luma/agent/requests/x/status",  # another scheme, another origin
    ]
    async with client_for(handler) as client:
        for url in lookalikes:
            with pytest.raises(UnsafeOutput):
                await client.status(url)
    assert calls == 0


# -- owner/app URL rule --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "app"),
    [
        ("luma/agent/ray/v3.2/video-to-video", "luma/agent"),
        ("fal-ai/flux/dev", "fal-ai/flux"),
        ("fal-ai/flux", "fal-ai/flux"),
        ("workflows/me/flow/sub/path", "workflows/me/flow"),
        ("comfy/me/wf", "comfy/me/wf"),
        ("12345-myapp", "12345/myapp"),
    ],
)
def test_request_urls_rule(endpoint: str, app: str) -> None:
    """Status/result/cancel URLs use owner/app only (namespaces keep three segments)."""
    client = FalClient(FalConfig(KEY, queue_url=Q))
    base = f"{Q}/{app}/requests/{RID}"
    assert client.request_urls(endpoint, RID) == (f"{base}/status", base, f"{base}/cancel")


@pytest.mark.parametrize("endpoint", ["flux", "a//b", "../x/y", "workflows/me", "a/b?c", ""])
def test_request_urls_refuse_bad_ids(endpoint: str) -> None:
    """Ids fal's parser would refuse (or that would bend the URL) are InputRejected."""
    with pytest.raises(InputRejected):
        FalClient(FalConfig(KEY)).request_urls(endpoint, RID)


def test_request_id_is_quoted() -> None:
    """A tampered request id cannot add path segments to the rebuilt URL."""
    status, _, _ = FalClient(FalConfig(KEY, queue_url=Q)).request_urls("a/b", "../../x")
    assert status == f"{Q}/a/b/requests/..%2F..%2Fx/status"


# -- SSE stream ----------------------------------------------------------------------------


def sse_handler(chunks: Iterable[bytes], code: int = 200) -> Handler:
    """A status stream that sends ``chunks`` as they are split."""

    async def body() -> Any:
        for chunk in chunks:
            yield chunk

    async def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path.endswith("/status/stream")
        assert request.headers["accept"] == "text/event-stream"
        return httpx.Response(code, content=body(), headers={"content-type": "text/event-stream"})

    return handler


async def collect(client: FalClient) -> list[str]:
    """The states the status stream yields."""
    return [s.state async for s in client.stream_status(STATUS_URL)]


async def test_stream_parses_split_events() -> None:
    """SSE events split anywhere, with comments, CRLF and event names, parse in order."""
    raw = (
        b": heartbeat\n\n"
        b'event: status\r\ndata: {"status": "IN_QUEUE", "queue_position": 2}\r\n\r\n'
        b'data: {"status": "IN_PROGRESS",\ndata:  "logs": [{"message": "\xc3\xa9t\xc3\xa9"}]}\n\n'
        b"data: \n\n"
        b'data: {"status": "COMPLETED", "logs": null}\n\n'
        b'data: {"status": "IN_QUEUE", "queue_position": 0}\n\n'
    )
    chunks = [raw[i : i + 7] for i in range(0, len(raw), 7)]  # splits lines and UTF-8 bytes
    async with client_for(sse_handler(chunks)) as client:
        states = [s async for s in client.stream_status(STATUS_URL)]
    assert [s.state for s in states] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert states[0].queue_position == 2
    assert states[1].logs == [{"message": "été"}]


async def test_stream_closed_early_is_transport_error() -> None:
    """A stream that ends before COMPLETED is a TransportError (the caller polls instead)."""
    handler = sse_handler([b'data: {"status": "IN_QUEUE", "queue_position": 0}\n\n'])
    async with client_for(handler) as client:
        with pytest.raises(TransportError):
            await collect(client)


async def test_stream_idle_timeout_is_transport_error() -> None:
    """A read timeout while waiting for the next event is a TransportError."""

    async def body() -> Any:
        yield b'data: {"status": "IN_QUEUE", "queue_position": 0}\n\n'
        raise httpx.ReadTimeout("idle")

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    async with client_for(handler) as client:
        with pytest.raises(TransportError):
            await collect(client)


async def test_stream_errors_are_classified() -> None:
    """A non-2xx stream answer goes through the same classification (404 → RequestLost)."""
    async with client_for(answer(404, NF)) as client:
        with pytest.raises(RequestLost):
            await collect(client)


async def test_stream_malformed_event() -> None:
    """An event whose data is not JSON is ServiceUnavailable."""
    async with client_for(sse_handler([b"data: {nope\n\n"])) as client:
        with pytest.raises(ServiceUnavailable):
            await collect(client)


# -- upload --------------------------------------------------------------------------------


def token_body(expires: datetime) -> dict[str, str]:
    """A CDN token answer expiring at ``expires``."""
    return {
        "token": "cdn-token-0123456789",
        "token_type": "Bearer",
        "base_url": C,
        "expires_at": expires.isoformat(),
    }


class FakeStorage:
    """Scripted token and CDN routes that record every request."""

    def __init__(self, expires_in: timedelta = timedelta(hours=1)) -> None:
        self.requests: list[httpx.Request] = []
        self.expires_in = expires_in
        self.part_status = 200

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        path = request.url.path
        if path == "/storage/auth/token":
            return httpx.Response(200, json=token_body(datetime.now(UTC) + self.expires_in))
        if path == "/files/upload":
            return httpx.Response(200, json={"access_url": f"{C}/files/abc/clip.mp4"})
        if path == "/files/upload/multipart":
            return httpx.Response(
                200, json={"access_url": f"{C}/files/m/big.mp4", "uploadId": "UP"}
            )
        if path.endswith("/complete"):
            return httpx.Response(200, json={})
        number = int(path.rsplit("/", 1)[1])
        if number == 2 and self.part_status != 200:
            return httpx.Response(self.part_status, json={})
        return httpx.Response(200, headers={"etag": f'"e{number}"'})

    def paths(self) -> list[str]:
        return [f"{r.method} {r.url.path}" for r in self.requests]


CLIP_BYTES = bytes(range(256)) * 4 + b"tail"  # 1028 bytes


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """A small local file to upload."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(CLIP_BYTES)
    return path


async def test_single_upload_wire(clip: Path) -> None:
    """Small files: token from REST (key auth), then one POST to the CDN with the token."""
    storage = FakeStorage()
    async with FalClient(
        FalConfig(KEY, queue_url=Q, rest_url=R, cdn_url=C), transport=httpx.MockTransport(storage)
    ) as client:
        url = await client.upload(clip, "video/mp4")
    assert url == f"{C}/files/abc/clip.mp4"
    token, upload = storage.requests
    assert str(token.url) == f"{R}/storage/auth/token?storage_type=fal-cdn-v3"
    assert token.method == "POST"
    assert token.headers["authorization"] == f"Key {KEY}"
    assert json.loads(token.content) == {}
    assert str(upload.url) == f"{C}/files/upload"
    assert upload.headers["authorization"] == "Bearer cdn-token-0123456789"
    assert upload.headers["content-type"] == "video/mp4"
    assert upload.headers["x-fal-file-name"] == "clip.mp4"
    assert upload.headers["content-length"] == "1028"
    assert "transfer-encoding" not in upload.headers
    assert upload.content == CLIP_BYTES


async def test_token_cached_across_uploads(clip: Path) -> None:
    """One token serves many uploads, even concurrent ones, until it nears expiry."""
    storage = FakeStorage()
    async with client_for(storage) as client:
        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(client.upload, clip, "video/mp4")
        await client.upload(clip, "video/mp4")
    assert storage.paths().count("POST /storage/auth/token") == 1


async def test_token_refreshed_when_expiring(clip: Path) -> None:
    """A token within a minute of expiry is replaced before the next upload."""
    storage = FakeStorage(expires_in=timedelta(seconds=10))
    async with client_for(storage) as client:
        await client.upload(clip, "video/mp4")
        await client.upload(clip, "video/mp4")
    assert storage.paths().count("POST /storage/auth/token") == 2


async def test_cdn_rejecting_token_drops_it(clip: Path) -> None:
    """A CDN 401 is AuthError and the refused token is not reused."""
    storage = FakeStorage()
    refuse = True

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/files/upload" and refuse:
            await request.aread()
            return httpx.Response(401, json={"detail": "bad token"})
        return await storage(request)

    async with client_for(handler) as client:
        with pytest.raises(AuthError, match="CDN rejected the upload token"):
            await client.upload(clip, "video/mp4")
        refuse = False
        await client.upload(clip, "video/mp4")
    assert storage.paths().count("POST /storage/auth/token") == 2


async def test_multipart_upload_wire(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large files: create, PUT each part from disk with its number, complete with ETags."""
    monkeypatch.setattr(fal_storage, "MULTIPART_THRESHOLD", 1000)
    monkeypatch.setattr(fal_storage, "PART_SIZE", 400)
    storage = FakeStorage()
    async with client_for(storage) as client:
        url = await client.upload(clip, "video/mp4")
    assert url == f"{C}/files/m/big.mp4"
    paths = storage.paths()
    assert paths[:2] == ["POST /storage/auth/token", "POST /files/upload/multipart"]
    assert sorted(paths[2:5]) == [f"PUT /files/m/big.mp4/multipart/UP/{n}" for n in (1, 2, 3)]
    assert paths[5] == "POST /files/m/big.mp4/multipart/UP/complete"
    create = storage.requests[1]
    assert create.headers["content-type"] == "video/mp4"
    assert create.headers["x-fal-file-name"] == "clip.mp4"
    data = CLIP_BYTES
    for part in storage.requests[2:5]:
        number = int(part.url.path.rsplit("/", 1)[1])
        assert part.content == data[(number - 1) * 400 : number * 400]
        assert part.headers["accept-encoding"] == "identity"
        assert part.headers["authorization"] == "Bearer cdn-token-0123456789"
    assert json.loads(storage.requests[5].content) == {
        "parts": [{"partNumber": n, "etag": f'"e{n}"'} for n in (1, 2, 3)]
    }


async def test_multipart_part_failure_aborts(clip: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed part raises its own class (not an ExceptionGroup) and nothing is completed."""
    monkeypatch.setattr(fal_storage, "MULTIPART_THRESHOLD", 1000)
    monkeypatch.setattr(fal_storage, "PART_SIZE", 400)
    storage = FakeStorage()
    storage.part_status = 503
    async with client_for(storage) as client:
        with pytest.raises(ServiceUnavailable):
            await client.upload(clip, "video/mp4")
    assert not any(p.endswith("/complete") for p in storage.paths())


async def test_upload_missing_file(tmp_path: Path) -> None:
    """A local file that cannot be read fails that job as a local error (LocalFileError,
    naming the file and saying nothing reached fal, not fal's InputRejected)."""
    storage = FakeStorage()
    async with client_for(storage) as client:
        with pytest.raises(LocalFileError) as caught:
            await client.upload(tmp_path / "gone.mp4", "video/mp4")
    assert str(tmp_path / "gone.mp4") in str(caught.value)
    assert "local file" in str(caught.value) and "nothing was sent to fal" in str(caught.value)
    assert not isinstance(caught.value, InputRejected)
    assert storage.requests == []


# -- configuration and the key -------------------------------------------------------------


def test_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """FAL_KEY wins, else FAL_KEY_ID:FAL_KEY_SECRET; fal_url sets all three bases."""
    monkeypatch.delenv("FAL_KEY", raising=False)
    monkeypatch.setenv("FAL_KEY_ID", "id")
    monkeypatch.setenv("FAL_KEY_SECRET", "secret")
    assert FalConfig.from_env().key == "id:secret"
    monkeypatch.setenv("FAL_KEY", "single")
    config = FalConfig.from_env("http://127.0.0.1:9/")
    assert config.key == "single"
    assert config.queue_url == config.rest_url == config.cdn_url == "http://127.0.0.1:9"


def test_config_without_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key in the environment is a clear AuthError."""
    for name in ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(AuthError, match="FAL_KEY"):
        FalConfig.from_env()


def echo_key(code: int) -> Handler:
    """A hostile server that echoes the Authorization header into its error."""

    async def handler(request: httpx.Request) -> httpx.Response:
        await request.aread()
        auth = request.headers.get("authorization", "")
        return httpx.Response(
            code,
            json={"detail": f"bad {auth} / {KEY.split(':')[1]}", "error_type": auth},
            headers={"x-fal-error-type": auth},
        )

    return handler


def echo_cdn(code: int) -> Handler:
    """Storage that hands out a token, then echoes it back in the CDN's error."""
    storage, echo = FakeStorage(), echo_key(code)

    async def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/storage/auth/token":
            return await storage(request)
        return await echo(request)

    return handler


async def every_call(client: FalClient, clip: Path) -> list[RaybatchError]:
    """Call each client operation once; return the errors they raised."""
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: client.submit(ENDPOINT, {}),
        lambda: client.status(STATUS_URL),
        lambda: client.result(RESPONSE_URL),
        lambda: client.cancel(CANCEL_URL),
        lambda: client.upload(clip, "video/mp4"),
        lambda: collect(client),
    ]
    errors = []
    for call in calls:
        try:
            await call()
        except RaybatchError as exc:
            errors.append(exc)
    return errors


async def test_key_never_in_errors(clip: Path) -> None:
    """Every error path (HTTP, transport, echoing servers) keeps the key out of text and repr."""
    handlers: list[Handler] = [answer(p.values[1], p.values[3], p.values[2]) for p in CASES]
    handlers += [echo_key(code) for code in (400, 401, 422, 429, 500, 503)]
    handlers += [echo_cdn(code) for code in (400, 401, 500)]
    handlers += [failing(e) for e in (httpx.ConnectError, httpx.ReadTimeout, httpx.ReadError)]
    errors: list[RaybatchError] = []
    for handler in handlers:
        async with client_for(handler) as client:
            errors += await every_call(client, clip)
    assert len(errors) > 100
    secrets = [KEY, KEY.split(":")[1], "cdn-token-0123456789"]
    for error in errors:
        text = f"{error} {error!r} {error.args} {vars(error)}"
        for secret in secrets:
            assert secret not in text, text
    config_text = repr(FalConfig(KEY)) + str(FalConfig(KEY))
    assert KEY not in config_text and "secret" not in config_text
