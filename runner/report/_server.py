"""``raybatch review``: the review page served on 127.0.0.1, where a person approves,
rejects, notes and rolls again outputs and looks.

Every verdict goes to ``state.db`` at once, through this server's own single writer
(``StateStore.open_beside_runs``): SQLite serialises it with a run's writer and with a
second review server on the same state, and a run waiting for verdicts notices it at its
next poll. Nothing here changes a job's state.

Security (the server changes state, so a stray page must not):

* it binds 127.0.0.1 only;
* it answers only requests whose ``Host`` is a loopback name with its own port: a DNS
  rebinding page (attacker.example resolving to 127.0.0.1) gets 403;
* a per-session token (``secrets.token_urlsafe``) is printed in the URL to open; the
  first visit trades it for a same-site, HTTP-only cookie (so other users of the machine,
  who can reach 127.0.0.1 too, see nothing), and the page carries it to send back in an
  ``X-Raybatch-Token`` header with every change: a request without it, from another
  origin, or from a page that never saw the token gets 403;
* responses forbid framing, sniffing, referrers and any script but the page's own
  (a nonce per response).
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import socket
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import IllegalTransition
from ..plan import Plan
from ..state import VERDICTS, StateStore, StateWriter, Verdicts
from ._judging import Judgeable, reroll_ops
from ._previews import POSTER_DIR, PROXY_DIR
from ._review import Live, review_html
from ._review_cards import Links

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
TOKEN_HEADER = "X-Raybatch-Token"
#: Posters one page load may extract (the rest come with later loads).
PAGE_POSTERS = 200
#: Largest request body accepted (a note is at most 4,000 characters).
MAX_BODY = 64 * 1024


@dataclass
class ReviewSession:
    """One review server's plan, token and writer."""

    plan: Plan  # what the page shows (a selection, perhaps)
    whole: Plan  # the manifest's whole plan: rerolls number takes over all of it
    reload: Callable[[], tuple[Plan, Plan]]  # (whole, shown) again, after a reroll
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    port: int = 0
    writer: StateWriter | None = None
    _store: StateStore | None = None
    _lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def cookie(self) -> str:
        """The session cookie's name (per port: two servers on one host keep theirs)."""
        return f"raybatch_review_{self.port}"

    @property
    def state_path(self) -> Path:
        return self.plan.output_dir / "state.db"


def serve_review(
    session: ReviewSession, *, port: int = 0, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve until interrupted (Ctrl-C); ``on_ready`` gets the URL to open, token and all,
    once the socket listens."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen(128)
        session.port = sock.getsockname()[1]
        app = review_app(session)
        config = uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
        server = uvicorn.Server(config)
        if on_ready is not None:
            on_ready(f"http://127.0.0.1:{session.port}/?token={session.token}")
        anyio.run(server.serve, [sock])
    finally:
        sock.close()


def review_app(session: ReviewSession) -> ASGIApp:
    """The review server's ASGI app, guarded (see the module docstring)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as group:
            app.state.group = group
            try:
                yield
            finally:
                if session.writer is not None:
                    session.writer.close()
        if session._store is not None:
            session._store.close()

    routes = [
        Route("/", _page, methods=["GET"]),
        Route("/files/{path:path}", _file, methods=["GET"]),
        Route("/sources/{sha}/{name}", _source, methods=["GET"]),
        Route("/api/jobs", _jobs, methods=["GET"]),
        Route("/api/verdict", _verdict, methods=["POST"]),
        Route("/api/note", _note, methods=["POST"]),
        Route("/api/reroll", _reroll, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.session = session
    return _Guard(app, session)


# --------------------------------------------------------------------------- the guard


class _Guard:
    """Loopback ``Host`` only; the session cookie on every request; the token header (and
    our own ``Origin``, when sent) on every change; the URL's token traded for the cookie."""

    def __init__(self, app: ASGIApp, session: ReviewSession) -> None:
        self.app = app
        self.session = session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = self.session
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        hosts = {f"{name}:{session.port}" for name in LOOPBACK_NAMES}
        if headers.get("host", "") not in hosts:
            await _refuse("this server answers only http://127.0.0.1:PORT", scope, receive, send)
            return
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [""])[0]
        if scope["path"] == "/" and given:
            if not _same(given, session.token):
                await _refuse(
                    "wrong token: open the URL raybatch review printed", scope, receive, send
                )
                return
            response = RedirectResponse("/", status_code=303)
            response.set_cookie(
                session.cookie, session.token, httponly=True, samesite="strict", path="/"
            )
            await _secured(response)(scope, receive, send)
            return
        cookie = _cookie(headers.get("cookie", ""), session.cookie)
        if not _same(cookie, session.token):
            await _refuse(
                "open the URL `raybatch review` printed (it carries this session's token)",
                scope, receive, send,
            )  # fmt: skip
            return
        if scope["method"] not in ("GET", "HEAD"):
            origin = headers.get("origin")
            if not _same(headers.get(TOKEN_HEADER.lower(), ""), session.token) or (
                origin is not None and origin != f"http://{headers['host']}"
            ):
                await _refuse("a change needs this session's token", scope, receive, send)
                return
        await self.app(scope, receive, _with_headers(send))


def _same(given: str, token: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def _cookie(header: str, name: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


async def _refuse(reason: str, scope: Scope, receive: Receive, send: Send) -> None:
    await _secured(JSONResponse({"error": reason}, status_code=403))(scope, receive, send)


_SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}


def _secured(response: Response) -> Response:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("cache-control", "no-store")
    return response


def _with_headers(send: Send) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {k.decode("latin-1").lower() for k, _ in headers}
            for name, value in _SECURITY_HEADERS.items():
                if name not in present:
                    headers.append((name.encode(), value.encode()))
            message = {**message, "headers": headers}
        await send(message)

    return sending


# --------------------------------------------------------------------------- pages and files


def _session(request: Request) -> ReviewSession:
    found: ReviewSession = request.app.state.session
    return found


@contextlib.contextmanager
def _reading(session: ReviewSession) -> Any:
    store = StateStore.open_readonly(session.state_path)
    try:
        yield store
    finally:
        if store is not None:
            store.close()


async def _page(request: Request) -> Response:
    session = _session(request)
    nonce = secrets.token_urlsafe(16)

    def render() -> str:
        with _reading(session) as store:
            links = Links(session.plan.output_dir, served=True)
            live = Live(session.token, nonce)
            return review_html(session.plan, store, links, live=live, posters=PAGE_POSTERS)

    text = await anyio.to_thread.run_sync(render)
    response = HTMLResponse(text)
    response.headers["content-security-policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}';"
        " img-src 'self' data:; media-src 'self'; connect-src 'self'; base-uri 'none';"
        " form-action 'none'; frame-ancestors 'none'"
    )
    return _secured(response)


async def _file(request: Request) -> Response:
    """A file under the output directory that the page shows: a job's output or a poster
    (never the state, the logs or anything else there)."""
    session = _session(request)
    relative = str(request.path_params["path"])

    def allowed() -> str | None:
        known = relative.count("/") == 2 and relative.startswith(
            (f"{POSTER_DIR}/", f"{PROXY_DIR}/")
        )
        if not known:
            with _reading(session) as store:
                rows = store.rows(session.plan.keys, results=False) if store else []
            known = any(str(o.get("path")) == relative for row in rows for o in row.outputs)
        root = os.path.realpath(session.plan.output_dir)
        path = os.path.realpath(os.path.join(root, relative))
        inside = path.startswith(root + os.sep) and os.path.isfile(path)
        return path if known and inside else None

    path = await anyio.to_thread.run_sync(allowed)
    if path is None:
        return JSONResponse({"error": "no such file"}, status_code=404)
    return FileResponse(path)


async def _source(request: Request) -> Response:
    """A local source file of the plan, by its sha256."""
    session = _session(request)
    local = session.plan.columns.local_files.get(str(request.path_params["sha"]))
    if local is None or not local.path.is_file():
        return JSONResponse({"error": "no such source"}, status_code=404)
    return FileResponse(local.path, media_type=local.content_type)


async def _jobs(request: Request) -> Response:
    """Jobs changed since the page's last look (``updated``: a time, ``verdict``: an id)."""
    session = _session(request)
    try:
        updated = float(request.query_params.get("updated", "0"))
        last = int(request.query_params.get("verdict", "0"))
    except ValueError:
        return JSONResponse({"error": "bad cursor"}, status_code=400)

    def read() -> dict[str, Any]:
        with _reading(session) as store:
            if store is None:
                return {"jobs": {}, "since": {"updated": updated, "verdict": last}}
            keys = set(session.plan.keys)
            mark = store.verdict_mark()  # first: a verdict given meanwhile is read twice
            judged = store.judged_since(last)
            jobs: dict[str, dict[str, Any]] = {}
            newest = updated
            for row in store.rows(keys, results=False):
                changed = row.updated_at > updated or row.key in judged
                newest = max(newest, row.updated_at)
                if changed:
                    jobs[row.key] = {"state": row.state, "verdict": row.verdict, "note": row.note}
            since = {"updated": newest, "verdict": mark.last_verdict}
            return {"jobs": jobs, "since": since, "total": len(keys)}

    return JSONResponse(await anyio.to_thread.run_sync(read))


# --------------------------------------------------------------------------- changes


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise _Bad(413, "too large")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise _Bad(400, "not JSON") from exc
    if not isinstance(body, dict):
        raise _Bad(400, "not a JSON object")
    return body


class _Bad(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


async def _writer(request: Request) -> StateWriter:
    """This server's single writer, started on first use (the state may only appear once
    a run starts after the server did)."""
    session = _session(request)
    async with session._lock:
        if session.writer is None:
            store = await anyio.to_thread.run_sync(StateStore.open_beside_runs, session.state_path)
            if store is None:
                raise _Bad(409, "nothing has run yet: there is nothing to judge")
            session._store = store
            writer = StateWriter(store)
            await request.app.state.group.start(writer.run)
            session.writer = writer
    return session.writer


def _judgeable_key(session: ReviewSession, body: Mapping[str, Any]) -> str:
    key = body.get("key")
    if not isinstance(key, str) or key not in set(session.whole.keys):
        raise _Bad(404, "no such job in this plan")
    if Judgeable.of(session.whole).kind(key) is None:
        raise _Bad(400, "an intermediate step is not judged: judge its look or its output")
    return key


async def _apply(request: Request, op: Any) -> None:
    writer = await _writer(request)
    try:
        await writer.apply(op)
    except IllegalTransition as exc:
        raise _Bad(409, str(exc)) from exc


async def _guarded(handler: Callable[[Request, dict[str, Any]], Any], request: Request) -> Response:
    try:
        result = await handler(request, await _body(request))
    except _Bad as bad:
        return JSONResponse({"error": str(bad)}, status_code=bad.status)
    return JSONResponse(result)


async def _verdict(request: Request) -> Response:
    async def handle(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        session = _session(request)
        key = _judgeable_key(session, body)
        verdict = body.get("verdict")
        if verdict is not None and verdict not in VERDICTS:
            raise _Bad(400, f"a verdict is one of {', '.join(VERDICTS)} or null")
        await _apply(request, Verdicts.judge(key, verdict, f"page:{session.port}"))
        return {"key": key, "verdict": verdict}

    return await _guarded(handle, request)


async def _note(request: Request) -> Response:
    async def handle(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        session = _session(request)
        key = _judgeable_key(session, body)
        note = body.get("note")
        if not isinstance(note, str) or len(note) > 4000:
            raise _Bad(400, "a note is text of at most 4,000 characters")
        await _apply(request, Verdicts.note(key, note.strip(), f"page:{session.port}"))
        return {"key": key, "note": note.strip() or None}

    return await _guarded(handle, request)


async def _reroll(request: Request) -> Response:
    async def handle(request: Request, body: dict[str, Any]) -> dict[str, Any]:
        session = _session(request)
        key = _judgeable_key(session, body)
        spec = session.whole.jobs[session.whole.keys.index(key)]

        def ops() -> list[Any]:
            with _reading(session) as store:
                if store is None:
                    return []
                rolled = {r["from_key"] for r in store.rerolls()}
                return reroll_ops(session.whole, [spec], store.judgements(), rolled)

        found = await anyio.to_thread.run_sync(ops)
        if not found:
            raise _Bad(409, "only a rejected look, or output no look gates, is rolled again once")
        await _apply(request, found[0][1])
        before = set(session.whole.keys)
        session.whole, session.plan = await anyio.to_thread.run_sync(session.reload)
        new = [s for s in session.whole.jobs if s.key not in before]
        take = max((s.take for s in new), default=spec.take)
        cost = round(sum(s.estimated_cost or 0.0 for s in new), 6)
        return {"key": key, "label": spec.label, "take": take, "cost": cost}

    return await _guarded(handle, request)
