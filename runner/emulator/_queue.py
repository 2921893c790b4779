"""fal's queue routes: submit, status, the status stream, result and cancel.

Unknown apps: a submit to an app the emulator does not serve answers 404
``{"detail": "Application 'owner/app' not found"}`` (``unknown_app="404"``, the default)
or is accepted and echoed (``"accept"``). What fal answers is not documented (fal-protocol
update 2026-12-04: "still unknown"; nothing definite found in fal's docs, OpenAPI pages or
issue threads searched 2026-12-05). 404 is the most likely: fal's app framework answers an
unknown path with 404 ``{"detail": "Path /x not found"}`` (fal SDK ``api.py``), and the
gateway must resolve the app before it can queue for it. An unknown *path* of a served app
(``luma/agent/ray/v3.2/video-to-vidoe``) is accepted and ends COMPLETED with that 404 at
the result, unbilled, as fal-js issue #153 shows for a queue submit to a missing path.

Status stream: ``data:`` events on each change, a ``: ping`` comment every
:data:`HEARTBEAT_SECONDS` while idle, closed after COMPLETED; the ``silent`` and
``close-early`` faults break each of those, and ``max_streams`` caps streams per key (the
stream beyond it gets 429).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import rules
from ._jobs import Job, Outcome, State
from ._origins import QUEUE_ROLES
from .faults import Fault, hostile_result
from .protocol import REQUEST_ID_HEADER, app_prefix, is_app_prefix, not_found

if TYPE_CHECKING:
    from .app import Emulator

#: Wall seconds between ``: ping`` comments on an idle status stream.
HEARTBEAT_SECONDS = 5.0

_QUEUE_ROUTES = {
    ("GET", ()): "result",
    ("GET", ("response",)): "result",
    ("GET", ("status",)): "status",
    ("GET", ("status", "stream")): "stream",
    ("PUT", ("cancel",)): "cancel",
}
#: The apps whose endpoints the rules table describes (Luma's, on fal).
LUMA_APPS = frozenset(app_prefix(endpoint) for endpoint in rules.ENDPOINTS)


def _positive_float(text: str | None) -> float | None:
    try:
        value = float(text or "")
    except ValueError:
        return None
    return value if value > 0 else None


def _wants_logs(request: Request) -> bool:
    return request.query_params.get("logs", "").lower() in ("1", "true")


class _EventStream(StreamingResponse):
    """A status stream that gives its slot back however it ends."""

    def __init__(self, content: AsyncIterator[str], headers: dict[str, str], release: Any):
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream; release the slot on completion, disconnect or cancellation."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


class QueueApi:
    """The queue handlers of one :class:`~.app.Emulator`."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.account = emulator.account

    def routes(self) -> list[Route]:
        """The catch-all queue route (it must come last: it matches every path)."""
        return [Route("/{path:path}", self.dispatch, methods=["GET", "POST", "PUT"])]

    async def dispatch(self, request: Request) -> Response:
        """Submit on POST; status/stream/result/cancel on ``{owner}/{app}/requests/...``."""
        e = self.emulator
        if e.role(request) not in QUEUE_ROLES:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        if request.method == "POST":
            return await e.guard(request, "submit", "key", self.submit)
        segments = request.path_params["path"].split("/")
        if "requests" not in segments:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        at = segments.index("requests")
        prefix, tail = segments[:at], segments[at + 1 :]
        if tail and not tail[-1]:
            tail.pop()  # the old SDK polls ``.../status/``
        if not is_app_prefix(prefix):
            # fal does not route the endpoint's sub-path here (§2): clients must use owner/app.
            return JSONResponse({"detail": "Method Not Allowed"}, status_code=405)
        op = _QUEUE_ROUTES.get((request.method, tuple(tail[1:])))
        if not tail or op is None:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        job = self.account.jobs.get(tail[0])
        if job is not None and job.prefix != "/".join(prefix):
            job = None
        handlers = {
            "result": self.result,
            "status": self.status,
            "stream": self.stream,
            "cancel": self.cancel,
        }
        return await e.guard(request, op, "key", partial(handlers[op], job))

    async def submit(self, request: Request, fault: Fault | None) -> Response:
        """``POST /{endpoint}``: queue a request (see the module docstring for unknown apps)."""
        endpoint = request.path_params["path"].strip("/")
        try:
            app = app_prefix(endpoint)
        except ValueError:
            return JSONResponse({"detail": f"Application {endpoint!r} not found"}, 404)
        config = self.emulator.config
        if config.unknown_app == "404" and not config.serves(endpoint, LUMA_APPS):
            return JSONResponse({"detail": f"Application {app!r} not found"}, 404)
        raw = await request.body()
        try:
            arguments = json.loads(raw) if raw.strip() else {}  # JS sends no body for {}
        except ValueError:
            return JSONResponse({"detail": "The request body is not valid JSON"}, 400)
        limit = request.query_params.get("fal_max_queue_length", "")
        if limit.isdigit() and self.account.waiting(endpoint) > int(limit):
            return JSONResponse(
                {"detail": f"Queue of {endpoint} holds more than {limit} requests"}, 429
            )
        forced = self._forced_outcome(fault)
        if forced is None and app in LUMA_APPS and endpoint not in rules.ENDPOINTS:
            forced = Outcome.path_not_found(endpoint.removeprefix(app).strip("/"))
        job = self.account.submit(
            endpoint,
            arguments,
            origin=str(request.base_url).rstrip("/"),
            timeout=_positive_float(request.headers.get("x-fal-request-timeout")),
            low_priority=request.headers.get("x-fal-queue-priority", "").lower() == "low",
            forced=forced,
        )
        body = {**self.account.status_body(job, False), "gateway_request_id": job.id}
        return JSONResponse(body, headers={REQUEST_ID_HEADER: job.id})

    def _forced_outcome(self, fault: Fault | None) -> Outcome | None:
        if fault is None or fault.kind not in ("error", "validation", "moderation"):
            return None
        self.emulator.faults.record("submit", fault)
        if fault.kind == "error":
            return Outcome.request_error(fault.arg)
        if fault.kind == "moderation":
            return Outcome.model_error([rules.moderation_detail()])
        return Outcome.model_error(
            [rules.detail(None, "value_error", "Value error, input rejected")]
        )

    async def status(self, job: Job | None, request: Request, fault: Fault | None) -> Response:
        """``GET .../requests/{id}/status``: 202 while queued or running, 200 when done."""
        if job is None:
            return not_found()
        if fault is not None and fault.kind == "regress" and self.account.regress(job):
            self.emulator.faults.record("status", fault)
        body = self.account.status_body(job, _wants_logs(request))
        code = 200 if job.state is State.COMPLETED else 202
        return JSONResponse(body, status_code=code, headers={REQUEST_ID_HEADER: job.id})

    async def stream(self, job: Job | None, request: Request, fault: Fault | None) -> Response:
        """``GET .../status/stream``: SSE status events (faults: silent, close-early)."""
        e = self.emulator
        if job is None:
            return not_found()
        key = e.credential(request)
        cap = e.config.max_streams
        if cap and e.streams[key] >= cap:
            e.streams_refused += 1
            return JSONResponse(
                {"detail": f"Too many concurrent status streams (at most {cap} per key)"},
                status_code=429,
                headers={REQUEST_ID_HEADER: job.id},
            )
        e.streams[key] += 1
        e.streams_max = max(e.streams_max, sum(e.streams.values()))
        with_logs = _wants_logs(request)
        broken = fault if fault is not None and fault.kind in ("silent", "close-early") else None
        if broken is not None:
            e.faults.record("stream", broken)

        async def events() -> AsyncIterator[str]:
            last: dict[str, Any] | None = None
            sent = 0
            while self.account.jobs.get(job.id) is job:  # a reset ends the stream
                body = self.account.status_body(job, with_logs)
                done = job.state is State.COMPLETED
                if broken is not None and (sent >= broken.events or done):
                    if broken.kind == "close-early":
                        return
                    await anyio.sleep_forever()  # silent: open, but not a byte more
                if body != last:
                    yield f"data: {json.dumps(body)}\n\n"
                    last, sent = body, sent + 1
                if done:
                    return
                if not await self.account.changed(HEARTBEAT_SECONDS):
                    yield ": ping\n\n"

        def release() -> None:
            e.streams[key] -= 1
            if e.streams[key] <= 0:
                del e.streams[key]

        headers = {REQUEST_ID_HEADER: job.id, "cache-control": "no-cache"}
        return _EventStream(events(), headers, release)

    async def result(self, job: Job | None, request: Request, fault: Fault | None) -> Response:
        """``GET .../requests/{id}``: the stored output with its status and headers."""
        if job is None:
            return not_found()
        if fault is not None and fault.kind == "expire" and job.state is State.COMPLETED:
            job.expired = True
            self.emulator.faults.record("result", fault)
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
            self.emulator.faults.record("result", fault)
        return JSONResponse(body, status_code=outcome.status, headers=headers)

    async def cancel(self, job: Job | None, request: Request, fault: Fault | None) -> Response:
        """``PUT .../requests/{id}/cancel``: 202, or 400 once completed (see Account.cancel)."""
        if job is None:
            return not_found()
        if not self.account.cancel(job):
            return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)
