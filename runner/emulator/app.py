"""The emulator's HTTP face: fal's queue, storage and CDN routes on one origin.

Every fal route goes through :meth:`Emulator.guard`, which counts the call, lets the
fault plan interfere, then checks the key; the handlers only speak the protocol. The
``/_emulator/*`` routes (stats, reset, faults) are the witness's own and need no key.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Literal

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import rules
from .account import Account, Job, Outcome, Renderer, State
from .config import EmulatorConfig
from .faults import Fault, FaultPlan, canned_response, hostile_result
from .protocol import (
    REQUEST_ID_HEADER,
    DropConnection,
    app_prefix,
    is_app_prefix,
    not_found,
    remember_transport,
    unauthorized,
)
from .storage import BlobResponse, FileStore, Multipart

#: Wall seconds between ``: ping`` comments on an idle status stream.
HEARTBEAT_SECONDS = 5.0

Auth = Literal["key", "cdn", "none"]
Handler = Callable[[Request, Fault | None], Awaitable[Response]]
_CREDENTIAL = re.compile(r"^(?:Key|Bearer) +(\S.*)$")
_QUEUE_ROUTES = {
    ("GET", ()): "result",
    ("GET", ("response",)): "result",
    ("GET", ("status",)): "status",
    ("GET", ("status", "stream")): "stream",
    ("PUT", ("cancel",)): "cancel",
}


def _origin(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _content_type(request: Request, default: str = "application/octet-stream") -> str:
    return request.headers.get("content-type") or default


def _detail(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def _positive_float(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if value > 0 else None


class Emulator:
    """One emulated fal: the account, the files, the fault plan and the call counters."""

    def __init__(self, config: EmulatorConfig, renderer: Renderer | None = None) -> None:
        self.config = config
        self.store = FileStore()
        self.account = Account(config, self.store, renderer)
        self.faults = FaultPlan(config.faults, seed=config.seed)
        self._tokens: set[str] = set()  # CDN tokens survive a reset, like a client's cache
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.calls: Counter[str] = Counter()
        self.uploads = 0
        self.bytes_served = 0

    def reset(self) -> None:
        """Forget requests, files and counters; keep the fault spec and issued tokens."""
        self.account.reset()
        self.store.clear()
        self.faults.reset()
        self._reset_counters()

    def stats(self) -> dict[str, Any]:
        """Everything the witness counted, for ``GET /_emulator/stats``."""
        account = self.account.stats()
        requests = account.pop("requests")
        return {
            **account,
            "submit_calls": self.calls["submit"],
            "status_calls": self.calls["status"],
            "stream_calls": self.calls["stream"],
            "result_calls": self.calls["result"],
            "cancels": self.calls["cancel"],
            "token_calls": self.calls["token"],
            "upload_calls": self.calls["upload"],
            "uploads": self.uploads,
            "cdn_calls": self.calls["cdn"],
            "bytes_served": self.bytes_served,
            "files": len(self.store.files),
            "faults": self.faults.counts(),
            "requests": requests,
        }

    # -- the gate every fal route passes ------------------------------------------------

    def _authorized(self, request: Request, auth: Auth) -> bool:
        if auth == "none":
            return True
        found = _CREDENTIAL.match(request.headers.get("authorization", ""))
        credential = found.group(1).strip() if found else ""
        if auth == "cdn":
            return credential in self._tokens
        return bool(credential) and credential not in self.config.bad_keys

    async def guard(self, request: Request, op: str, auth: Auth, handler: Handler) -> Response:
        """Count the call, apply a drawn fault, check auth, then run ``handler``.

        Faults come before auth because they stand for the ingress in front of fal.
        Faults that change what the handler does are passed to it; it records them
        when they take effect.
        """
        self.calls[op] += 1
        fault = self.faults.draw(op)
        if fault is not None and fault.kind == "slow":
            self.faults.record(op, fault)
            await anyio.sleep(fault.seconds)
            fault = None
        if fault is not None and (canned := canned_response(fault)) is not None:
            self.faults.record(op, fault)
            return canned
        if not self._authorized(request, auth):
            return unauthorized()
        response = await handler(request, fault)
        if fault is not None and fault.kind == "drop-after":
            self.faults.record(op, fault)
            return DropConnection()
        return response

    def route(self, path: str, op: str, auth: Auth, handler: Handler, methods: list[str]) -> Route:
        """A Starlette route whose endpoint goes through :meth:`guard`."""

        async def endpoint(request: Request) -> Response:
            return await self.guard(request, op, auth, handler)

        return Route(path, endpoint, methods=methods)

    # -- queue --------------------------------------------------------------------------

    async def queue(self, request: Request) -> Response:
        """Submit on POST; status/stream/result/cancel on ``{owner}/{app}/requests/...``."""
        if request.method == "POST":
            return await self.guard(request, "submit", "key", self._submit)
        segments = request.path_params["path"].split("/")
        if "requests" not in segments:
            return _detail(404, "Not Found")
        at = segments.index("requests")
        prefix, tail = segments[:at], segments[at + 1 :]
        if tail and not tail[-1]:
            tail.pop()  # the old SDK polls ``.../status/``
        if not is_app_prefix(prefix):
            # fal does not route the endpoint's sub-path here (§2): clients must use owner/app.
            return _detail(405, "Method Not Allowed")
        op = _QUEUE_ROUTES.get((request.method, tuple(tail[1:])))
        if not tail or op is None:
            return _detail(404, "Not Found")
        job = self.account.jobs.get(tail[0])
        if job is not None and job.prefix != "/".join(prefix):
            job = None
        handlers = {
            "result": self._result,
            "status": self._status,
            "stream": self._stream,
            "cancel": self._cancel,
        }
        return await self.guard(request, op, "key", partial(handlers[op], job))

    async def _submit(self, request: Request, fault: Fault | None) -> Response:
        endpoint = request.path_params["path"].strip("/")
        try:
            app_prefix(endpoint)
        except ValueError:
            return _detail(404, f"Application {endpoint!r} not found")
        raw = await request.body()
        try:
            arguments = json.loads(raw) if raw.strip() else {}  # JS sends no body for {}
        except ValueError:
            return _detail(400, "The request body is not valid JSON")
        limit = request.query_params.get("fal_max_queue_length", "")
        if limit.isdigit() and self.account.waiting(endpoint) > int(limit):
            return _detail(429, f"Queue of {endpoint} holds more than {limit} requests")
        job = self.account.submit(
            endpoint,
            arguments,
            origin=_origin(request),
            timeout=_positive_float(request.headers.get("x-fal-request-timeout")),
            low_priority=request.headers.get("x-fal-queue-priority", "").lower() == "low",
            forced=self._forced_outcome(fault),
        )
        body = {**self.account.status_body(job, False), "gateway_request_id": job.id}
        return JSONResponse(body, headers={REQUEST_ID_HEADER: job.id})

    def _forced_outcome(self, fault: Fault | None) -> Outcome | None:
        if fault is None or fault.kind not in ("error", "validation", "moderation"):
            return None
        self.faults.record("submit", fault)
        if fault.kind == "error":
            return Outcome.request_error(fault.arg)
        if fault.kind == "moderation":
            return Outcome.model_error([rules.moderation_detail()])
        return Outcome.model_error(
            [rules.detail(None, "value_error", "Value error, input rejected")]
        )

    async def _status(self, job: Job | None, request: Request, fault: Fault | None) -> Response:
        if job is None:
            return not_found()
        if fault is not None and fault.kind == "regress" and self.account.regress(job):
            self.faults.record("status", fault)
        body = self.account.status_body(job, _wants_logs(request))
        code = 200 if job.state is State.COMPLETED else 202
        return JSONResponse(body, status_code=code, headers={REQUEST_ID_HEADER: job.id})

    async def _stream(self, job: Job | None, request: Request, fault: Fault | None) -> Response:
        if job is None:
            return not_found()
        with_logs = _wants_logs(request)

        async def events() -> AsyncIterator[str]:
            last: dict[str, Any] | None = None
            while self.account.jobs.get(job.id) is job:  # a reset ends the stream
                body = self.account.status_body(job, with_logs)
                if body != last:
                    yield f"data: {json.dumps(body)}\n\n"
                    last = body
                if job.state is State.COMPLETED:
                    return
                if not await self.account.changed(HEARTBEAT_SECONDS):
                    yield ": ping\n\n"

        headers = {REQUEST_ID_HEADER: job.id, "cache-control": "no-cache"}
        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    async def _result(self, job: Job | None, request: Request, fault: Fault | None) -> Response:
        if job is None:
            return not_found()
        if fault is not None and fault.kind == "expire" and job.state is State.COMPLETED:
            job.expired = True
            self.faults.record("result", fault)
        if self.account.expired(job):
            return not_found()
        if job.state is not State.COMPLETED or job.outcome is None:
            return JSONResponse(
                {"detail": "Request is still in progress"},
                status_code=400,
                headers={REQUEST_ID_HEADER: job.id},
            )
        outcome = job.outcome
        if job.first_result_at is None:
            job.first_result_at = time.time()
        headers = {REQUEST_ID_HEADER: job.id, **outcome.headers}
        body = outcome.body
        if fault is not None and fault.kind == "hostile" and outcome.status == 200:
            body = hostile_result(body)
            self.faults.record("result", fault)
        return JSONResponse(body, status_code=outcome.status, headers=headers)

    async def _cancel(self, job: Job | None, request: Request, fault: Fault | None) -> Response:
        if job is None:
            return not_found()
        if not self.account.cancel(job):
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)

    # -- storage and CDN ----------------------------------------------------------------

    async def _token(self, request: Request, fault: Fault | None) -> Response:
        token = secrets.token_urlsafe(24)
        self._tokens.add(token)
        expires = datetime.now(UTC) + timedelta(hours=1)
        body = {
            "token": token,
            "token_type": "Bearer",
            "base_url": _origin(request),
            "expires_at": expires.isoformat(),
        }
        return JSONResponse(body)

    async def _upload(self, request: Request, fault: Fault | None) -> Response:
        blob = await self.store.receive(request.stream(), _content_type(request))
        key = self.store.new_key(request.headers.get("x-fal-file-name"))
        self.store.put(key, blob)
        self.uploads += 1
        return JSONResponse({"access_url": f"{_origin(request)}/files/{key}"})

    async def _multipart_create(self, request: Request, fault: Fault | None) -> Response:
        key = self.store.new_key(request.headers.get("x-fal-file-name"))
        upload_id = self.store.start_multipart(key, _content_type(request))
        return JSONResponse(
            {"access_url": f"{_origin(request)}/files/{key}", "uploadId": upload_id}
        )

    async def _initiate(self, request: Request, fault: Fault | None) -> Response:
        # Both REST initiate flavours open a session: its upload_url takes one PUT of the
        # whole file, or numbered part PUTs and a complete (the JS multipart flow).
        try:
            body = await request.json()
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        key = self.store.new_key(body.get("file_name"))
        upload_id = self.store.start_multipart(
            key, body.get("content_type") or "application/octet-stream"
        )
        origin = _origin(request)
        return JSONResponse(
            {
                "upload_url": f"{origin}/storage/upload/put/{upload_id}",
                "file_url": f"{origin}/files/{key}",
            }
        )

    def _session(self, request: Request) -> Multipart | None:
        upload = self.store.uploads.get(request.path_params["upload_id"])
        key = request.path_params.get("key")
        return None if upload is None or key not in (None, upload.key) else upload

    async def _put_whole(self, request: Request, fault: Fault | None) -> Response:
        upload = self._session(request)
        if upload is None:
            return _detail(404, "Upload not found")
        blob = await self.store.receive(
            request.stream(), _content_type(request, upload.content_type)
        )
        self.store.put(upload.key, blob)
        upload.done = True
        self.uploads += 1
        return Response(status_code=200)

    async def _put_part(self, request: Request, fault: Fault | None) -> Response:
        if self._session(request) is None:
            return _detail(404, "Upload not found")
        number = request.path_params["part"]
        blob = await self.store.put_part(request.path_params["upload_id"], number, request.stream())
        return JSONResponse({"partNumber": number, "etag": blob.etag}, headers={"ETag": blob.etag})

    async def _complete(self, request: Request, fault: Fault | None) -> Response:
        upload = self._session(request)
        if upload is None:
            return _detail(404, "Upload not found")
        was_done = upload.done
        try:
            await self.store.complete(
                request.path_params["upload_id"], (await request.json())["parts"]
            )
        except (ValueError, KeyError, TypeError) as exc:
            return _detail(400, f"Cannot complete the upload: {exc}")
        self.uploads += 0 if was_done else 1
        url = f"{_origin(request)}/files/{upload.key}"
        return JSONResponse({"access_url": url, "file_url": url})

    async def _serve(self, request: Request, fault: Fault | None) -> Response:
        blob = self.store.files.get(request.path_params["key"])
        if blob is None:
            return _detail(404, "Not Found")
        damage = fault.kind if fault is not None and fault.kind in ("truncate", "corrupt") else None
        if fault is not None and damage:
            self.faults.record("cdn", fault)
        return BlobResponse(
            blob,
            range_header=request.headers.get("range"),
            head=request.method == "HEAD",
            fault=damage,
            on_sent=self._count_served,
        )

    def _count_served(self, size: int) -> None:
        self.bytes_served += size

    # -- the witness's own routes -------------------------------------------------------

    async def stats_route(self, request: Request) -> Response:
        """``GET /_emulator/stats``."""
        return JSONResponse(self.stats())

    async def reset_route(self, request: Request) -> Response:
        """``POST /_emulator/reset``."""
        self.reset()
        return JSONResponse({"status": "reset"})

    async def faults_route(self, request: Request) -> Response:
        """``GET /_emulator/faults`` shows the plan; POST ``{"spec", "extend"?}`` changes it."""
        if request.method == "POST":
            try:
                body = await request.json()
                self.faults.configure(str(body["spec"]), extend=bool(body.get("extend")))
            except (ValueError, KeyError, TypeError) as exc:
                return _detail(400, f"Bad fault spec: {exc}")
        return JSONResponse(self.faults.describe())


def _wants_logs(request: Request) -> bool:
    return request.query_params.get("logs", "").lower() in ("1", "true")


class _EmulatorApp(Starlette):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            remember_transport(scope, send)  # before Starlette's middleware wraps `send`
        await super().__call__(scope, receive, send)


def create_app(
    config: EmulatorConfig | None = None, *, renderer: Renderer | None = None
) -> Starlette:
    """The emulator as an ASGI app; its lifespan runs the account's scheduler.

    ``renderer`` replaces ``render.render`` (same signature), e.g. with a stub in tests.
    """
    e = emulator = Emulator(config or EmulatorConfig(), renderer)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(emulator.account.run)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        emulator.store.clear()

    routes = [
        Route("/_emulator/stats", e.stats_route, methods=["GET"]),
        Route("/_emulator/reset", e.reset_route, methods=["POST"]),
        Route("/_emulator/faults", e.faults_route, methods=["GET", "POST"]),
        e.route("/storage/auth/token", "token", "key", e._token, ["POST"]),
        e.route("/storage/upload/initiate", "upload", "key", e._initiate, ["POST"]),
        e.route("/storage/upload/initiate-multipart", "upload", "key", e._initiate, ["POST"]),
        e.route("/storage/upload/put/{upload_id}", "upload", "none", e._put_whole, ["PUT"]),
        e.route(
            "/storage/upload/put/{upload_id}/{part:int}", "upload", "none", e._put_part, ["PUT"]
        ),
        e.route(
            "/storage/upload/put/{upload_id}/complete", "upload", "none", e._complete, ["POST"]
        ),
        e.route("/files/upload", "upload", "cdn", e._upload, ["POST"]),
        e.route("/files/upload/multipart", "upload", "cdn", e._multipart_create, ["POST"]),
        e.route(
            "/files/{key:path}/multipart/{upload_id}/{part:int}",
            "upload",
            "cdn",
            e._put_part,
            ["PUT"],
        ),
        e.route(
            "/files/{key:path}/multipart/{upload_id}/complete",
            "upload",
            "cdn",
            e._complete,
            ["POST"],
        ),
        e.route("/files/{key:path}", "cdn", "none", e._serve, ["GET", "HEAD"]),
        Route("/{path:path}", e.queue, methods=["GET", "POST", "PUT"]),
    ]
    app = _EmulatorApp(routes=routes, lifespan=lifespan)
    app.state.emulator = emulator
    return app
