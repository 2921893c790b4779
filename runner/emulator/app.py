"""The emulator's HTTP face: fal's queue, REST, storage and CDN routes, on their origins.

Every fal route goes through :meth:`Emulator.guard`, which checks the route belongs to the
origin the request came in through, counts the call, lets the fault plan interfere, then
checks the key; the handlers (``_queue.py``, ``_cdn.py``, ``_pricing.py``) only speak the
protocol. The ``/_emulator/*`` routes (stats, reset, faults) are the witness's own, served
on every origin and with no key.

Origins: once the server has bound its sockets it calls :meth:`Emulator.set_origins`;
the queue and REST routes then answer only on the queue origin (and the backup host), the
upload and file routes only on the storage origin, whose URL the CDN token gives as
``base_url``, as fal's does. A bare ``create_app()`` with no origins serves every route
on whatever origin it is reached at.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ._cdn import CdnApi
from ._origins import Origins, Role
from ._persist import Journal
from ._pricing import PricingApi
from ._queue import QueueApi
from .account import Account, Renderer
from .config import EmulatorConfig
from .faults import Fault, FaultPlan, canned_response
from .protocol import DropConnection, remember_transport, unauthorized
from .storage import FileStore

Auth = Literal["key", "cdn", "none"]
Handler = Callable[[Request, Fault | None], Awaitable[Response]]
_CREDENTIAL = re.compile(r"^(?:Key|Bearer) +(\S.*)$")


def request_origin(request: Request) -> str:
    """``scheme://host:port`` as the client addressed it."""
    return str(request.base_url).rstrip("/")


def detail(status: int, message: str) -> JSONResponse:
    """fal's plain error body, ``{"detail": message}``."""
    return JSONResponse({"detail": message}, status_code=status)


class Emulator:
    """One emulated fal: the account, the files, the fault plan and the call counters."""

    def __init__(self, config: EmulatorConfig, renderer: Renderer | None = None) -> None:
        self.config = config
        state = Path(config.state_dir) if config.state_dir else None
        self.store = FileStore(
            directory=state / "files" if state else None, min_part_size=config.min_part_size
        )
        self.account = Account(config, self.store, renderer)
        self.faults = FaultPlan(config.faults, seed=config.seed)
        self.origins: Origins | None = None
        self.journal = Journal(state) if state else None
        self.tokens: set[str] = set()  # CDN tokens survive a reset, like a client's cache
        #: Status streams open per credential, for ``max_streams``.
        self.streams: Counter[str] = Counter()
        self.queue = QueueApi(self)
        self.cdn = CdnApi(self)
        self.pricing = PricingApi(self)
        self._reset_counters()

    def _reset_counters(self) -> None:
        self.calls: Counter[str] = Counter()
        self.uploads = 0
        self.bytes_served = 0
        self.streams_max = 0
        self.streams_refused = 0

    def set_origins(self, origins: Origins) -> None:
        """Serve each route on its own origin from now on (see the module docstring)."""
        self.origins = origins
        self.account.cdn_origin = origins.storage

    def storage_origin(self, request: Request) -> str:
        """The origin uploads and files live at."""
        return self.origins.storage if self.origins else request_origin(request)

    def role(self, request: Request) -> Role:
        """The origin ``request`` came in through."""
        return self.origins.role(request.scope.get("server")) if self.origins else "any"

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
            "streams_open": sum(self.streams.values()),
            "streams_max": self.streams_max,
            "streams_refused": self.streams_refused,
            "result_calls": self.calls["result"],
            "cancels": self.calls["cancel"],
            "token_calls": self.calls["token"],
            "upload_calls": self.calls["upload"],
            "uploads": self.uploads,
            "cdn_calls": self.calls["cdn"],
            "pricing_calls": self.calls["pricing"],
            "bytes_served": self.bytes_served,
            "files": len(self.store.files),
            "faults": self.faults.counts(),
            "origins": None if self.origins is None else vars(self.origins),
            "pid": os.getpid(),
            "requests": requests,
        }

    # -- the gate every fal route passes ------------------------------------------------

    @staticmethod
    def credential(request: Request) -> str:
        """The key or token in the Authorization header ("" when there is none)."""
        found = _CREDENTIAL.match(request.headers.get("authorization", ""))
        return found.group(1).strip() if found else ""

    def authorized(self, request: Request, auth: Auth) -> bool:
        """Whether the request carries what ``auth`` asks for."""
        if auth == "none":
            return True
        credential = self.credential(request)
        if auth == "cdn":
            return credential in self.tokens
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
        if not self.authorized(request, auth):
            return unauthorized()
        response = await handler(request, fault)
        if fault is not None and fault.kind == "drop-after":
            self.faults.record(op, fault)
            return DropConnection()
        return response

    def route(
        self,
        path: str,
        op: str,
        auth: Auth,
        handler: Handler,
        methods: list[str],
        roles: frozenset[Role],
    ) -> Route:
        """A Starlette route, answered on ``roles`` only, whose endpoint goes through
        :meth:`guard`."""

        async def endpoint(request: Request) -> Response:
            if self.role(request) not in roles:
                return detail(404, "Not Found")
            return await self.guard(request, op, auth, handler)

        return Route(path, endpoint, methods=methods)

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
                return detail(400, f"Bad fault spec: {exc}")
        return JSONResponse(self.faults.describe())

    def witness_routes(self) -> list[Route]:
        """The ``/_emulator/*`` routes, on every origin."""
        return [
            Route("/_emulator/stats", self.stats_route, methods=["GET"]),
            Route("/_emulator/reset", self.reset_route, methods=["POST"]),
            Route("/_emulator/faults", self.faults_route, methods=["GET", "POST"]),
        ]

    # -- lifetime -----------------------------------------------------------------------

    def restore(self) -> None:
        """Take back what the state directory holds: files, tokens and requests."""
        if self.journal is None:
            return
        self.store.restore(self.journal.files())
        self.tokens.update(self.journal.tokens())
        origin = self.origins.queue if self.origins else ""
        self.account.restore(self.journal.jobs(), origin)

    def attach_journal(self) -> None:
        """Journal every change from now on (after :meth:`restore`)."""
        if self.journal is not None:
            self.account.journal = self.journal
            self.store.journal = self.journal

    def close(self) -> None:
        """Release what the emulator holds: the journal, and temporary files."""
        if self.journal is not None:
            self.journal.close()
        else:
            self.store.clear()


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
    ``app.state.emulator`` is the :class:`Emulator`.
    """
    emulator = Emulator(config or EmulatorConfig(), renderer)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        emulator.restore()
        emulator.attach_journal()
        async with anyio.create_task_group() as tg:
            tg.start_soon(emulator.account.run)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        emulator.close()

    routes = [
        *emulator.witness_routes(),
        *emulator.pricing.routes(),
        *emulator.cdn.routes(),
        *emulator.queue.routes(),
    ]
    app = _EmulatorApp(routes=routes, lifespan=lifespan)
    app.state.emulator = emulator
    return app
