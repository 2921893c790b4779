"""A scripted fal for engine unit tests, on ``httpx.MockTransport``: no sockets, no process.

The engine is built directly (``Scheduler`` + ``StateWriter`` over a real SQLite file),
its ``FalClient`` on a MockTransport, and its outputs in :class:`DiskSink` — an
``OutputSink`` that fetches over the same MockTransport into a directory. The
real download path (``.part`` files, Range, digests) has its own tests against loopback
servers (tests/test_download.py); here only what the engine decides is under test.

Faults are scripted per operation: ``fal.script("submit", [answer, answer, ...])`` makes
the next calls of that operation answer those, in order, then normally again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import httpx
import stamina

from runner.errors import DownloadError
from runner.fal import FalClient, FalConfig
from runner.job import JobSpec, job_key
from runner.outputs import Downloaded
from runner.pipeline import LocalStep, RunOptions, RunSummary, Scheduler
from runner.state import StateStore, Transitions, open_writer

KEY = "fake-key-0123456789"
QUEUE = "https://queue.fake"
CDN = "https://cdn.fake"
ENDPOINT = "luma/agent/ray/v3.2/text-to-video"

#: What a scripted answer can be: a response, a transport error to raise, "ok" (answer
#: normally), or (seconds, answer) to answer that way after a pause.
Answer = httpx.Response | type[httpx.RequestError] | str | tuple[float, Any]


def reply(status: int, body: Any = None, headers: dict[str, str] | None = None) -> httpx.Response:
    """A canned answer (JSON body unless str)."""
    if isinstance(body, str):
        return httpx.Response(status, text=body, headers=headers)
    return httpx.Response(status, json=body if body is not None else {}, headers=headers)


@dataclass
class Request:
    """One request the fake holds."""

    id: str
    endpoint: str
    arguments: dict[str, Any]
    polls: int = 0
    #: What the status says on each poll until COMPLETED (IN_QUEUE, IN_PROGRESS, ...).
    states: list[str] = field(default_factory=lambda: ["IN_QUEUE", "IN_PROGRESS"])
    error_type: str | None = None


class FakeFal:
    """fal's queue and CDN, scripted; counts every call."""

    def __init__(self) -> None:
        self.requests: dict[str, Request] = {}
        self.calls: defaultdict[str, int] = defaultdict(int)
        self._scripts: defaultdict[str, list[Answer]] = defaultdict(list)
        self._ids = itertools.count(1)
        #: Set to make every new request complete with this error_type.
        self.complete_with: list[str | None] = []
        self.files: dict[str, bytes] = {}
        self.on_call: Callable[[str, httpx.Request], None] | None = None

    def script(self, op: str, answers: Iterable[Answer]) -> None:
        """The next calls of ``op`` answer these, in order."""
        self._scripts[op].extend(answers)

    @property
    def submits(self) -> int:
        """Requests created (what fal would bill)."""
        return len(self.requests)

    def transport(self) -> httpx.MockTransport:
        """The MockTransport serving this fake."""
        return httpx.MockTransport(self._handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        op = _op(request)
        self.calls[op] += 1
        if self.on_call is not None:
            self.on_call(op, request)
        if self._scripts[op]:
            scripted = self._scripts[op].pop(0)
            if isinstance(scripted, tuple):
                pause, scripted = scripted
                await anyio.sleep(pause)
            if isinstance(scripted, type):
                raise scripted("scripted failure", request=request)
            if isinstance(scripted, httpx.Response):
                return scripted
        return self._answer(op, request)

    def _answer(self, op: str, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if op == "submit":
            rid = f"req-{next(self._ids)}"
            error = self.complete_with.pop(0) if self.complete_with else None
            self.requests[rid] = Request(rid, path.strip("/"), json.loads(request.content), 0,
                                         error_type=error)  # fmt: skip
            base = f"{QUEUE}/luma/agent/requests/{rid}"
            return reply(
                200,
                {
                    "request_id": rid,
                    "status_url": f"{base}/status",
                    "response_url": base,
                    "cancel_url": f"{base}/cancel",
                },
            )
        if op == "cdn":
            data = self.files.get(path)
            return httpx.Response(200, content=data) if data is not None else reply(404)
        if op == "token":
            return reply(200, {"token": "cdn-token", "token_type": "Bearer", "base_url": CDN})
        if op == "upload":
            name = f"/files/upload-{len(self.files)}"
            self.files[name] = request.content
            return reply(200, {"access_url": CDN + name})
        rid = path.split("/requests/")[1].split("/")[0]
        held = self.requests.get(rid)
        if held is None:
            return reply(404, {"status": "NOT_FOUND"})
        if op in ("status", "stream"):
            return self._status(held, stream=op == "stream")
        if op == "result":
            return self._result(held)
        if op == "cancel":
            return reply(202, {"status": "CANCELLATION_REQUESTED"})
        raise AssertionError(f"unexpected {op} {request.url}")

    def _status(self, held: Request, *, stream: bool) -> httpx.Response:
        events = [{"status": s, "request_id": held.id} for s in held.states]
        done: dict[str, Any] = {"status": "COMPLETED", "request_id": held.id}
        if held.error_type:
            done |= {"error": f"failed: {held.error_type}", "error_type": held.error_type}
        if stream:
            text = "".join(f"data: {json.dumps(e)}\n\n" for e in [*events, done])
            return httpx.Response(200, text=text, headers={"content-type": "text/event-stream"})
        held.polls += 1
        body = events[held.polls - 1] if held.polls <= len(events) else done
        return reply(200 if body["status"] == "COMPLETED" else 202, body)

    def _result(self, held: Request) -> httpx.Response:
        if held.error_type:
            return reply(500, {"detail": "failed", "error_type": held.error_type})
        data = f"video of {held.id}".encode()
        url = f"{CDN}/files/{held.id}.mp4"
        self.files[f"/files/{held.id}.mp4"] = data
        body = {"video": {"url": url, "content_type": "video/mp4", "file_size": len(data)}}
        return reply(200, body, headers={"x-fal-billable-units": "5"})


def _op(request: httpx.Request) -> str:
    path = request.url.path
    if request.url.host == httpx.URL(CDN).host:
        return "upload" if request.method == "POST" else "cdn"
    if path.endswith("/storage/auth/token"):
        return "token"
    if request.method == "POST":
        return "submit"
    if request.method == "PUT":
        return "cancel"
    if path.endswith("/status/stream"):
        return "stream"
    if path.endswith("/status"):
        return "status"
    return "result"


class DiskSink:
    """An OutputSink under a directory that fetches over the test's MockTransport (the
    engine's only view of outputs is this interface; the real downloader's own tests run
    against loopback servers)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def download(
        self,
        client: httpx.AsyncClient,
        url: str,
        relative: PurePosixPath,
        *,
        expected_size: int | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Downloaded:
        """GET ``url``; a non-2xx answer is a DownloadError, as the real downloader says."""
        try:
            response = await client.get(url)
        except httpx.RequestError as exc:
            raise DownloadError(f"download request failed ({exc})", outage=True) from exc
        if not response.is_success:
            code = response.status_code
            raise DownloadError(f"download answered HTTP {code}", outage=code >= 500)
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(response.content)
        digest = hashlib.sha256(response.content).hexdigest()
        return Downloaded(target, len(response.content), digest)

    def write(self, relative: PurePosixPath, produce: Callable[[Path], None]) -> Downloaded:
        """What a local step writes, straight under its name (no crash-safety needed here)."""
        target = self.path(relative)
        target.parent.mkdir(parents=True, exist_ok=True)
        produce(target)
        data = target.read_bytes()
        return Downloaded(target, len(data), hashlib.sha256(data).hexdigest())

    def path(self, relative: str | PurePosixPath) -> Path:
        """Where an output is."""
        return self.root / PurePosixPath(relative)

    def check(
        self, relative: str, size: int, sha256: str, *, mtime_ns: int | None, full: bool
    ) -> str | None:
        """Whether the file is there with its size (and, ``full``, its sha256)."""
        target = self.path(relative)
        if not target.is_file() or target.stat().st_size != size:
            return f"{relative} is missing"
        if full and hashlib.sha256(target.read_bytes()).hexdigest() != sha256:
            return f"{relative} was altered"
        return None

    def stamp(self, relative: str | PurePosixPath) -> int | None:
        """The file's mtime."""
        return self.path(relative).stat().st_mtime_ns

    def move(self, relative: str, to: str) -> bool:
        """Rename (these tests never move onto an existing file)."""
        source, target = self.path(relative), self.path(to)
        if not source.exists():
            return target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        source.rename(target)
        return True


def specs(count: int, *, cost: float = 0.5) -> list[JobSpec]:
    """``count`` independent text-to-video jobs."""
    found = []
    for n in range(count):
        arguments = {"prompt": f"shot {n}", "resolution": "540p", "duration": "5s"}
        key = job_key(ENDPOINT, arguments)
        found.append(
            JobSpec(key, ENDPOINT, arguments, f"out/{n}.mp4", prompt=f"p{n}", estimated_cost=cost)
        )
    return found


@asynccontextmanager
async def engine(
    tmp_path: Path,
    fal: FakeFal,
    jobs: Sequence[JobSpec],
    *,
    local_steps: Mapping[str, LocalStep] | None = None,
    **options: Any,
) -> AsyncIterator[tuple[Scheduler, StateStore, DiskSink]]:
    """A scheduler over ``jobs`` (added to a fresh state file), on the fake fal."""
    store = StateStore.open(tmp_path / "state.db")
    sink = DiskSink(tmp_path / "out")
    defaults: dict[str, Any] = {"poll_initial": 0.001, "poll_max": 0.001, "status_per_second": 1e6}
    try:
        async with open_writer(store) as writer:
            if not store.rows():
                await writer.apply(Transitions.add_plan(jobs, None))
            config = FalConfig(KEY, queue_url=QUEUE, rest_url=QUEUE, cdn_url=CDN)
            async with (
                FalClient(config, transport=fal.transport()) as client,
                httpx.AsyncClient(transport=fal.transport()) as downloader,
            ):
                scheduler = Scheduler(
                    jobs,
                    writer,
                    client,
                    sink,
                    RunOptions(**(defaults | options)),
                    downloader=downloader,
                    local_steps=local_steps,
                )
                yield scheduler, store, sink
    finally:
        store.close()


async def run_jobs(
    tmp_path: Path,
    fal: FakeFal,
    jobs: Sequence[JobSpec],
    *,
    local_steps: Mapping[str, LocalStep] | None = None,
    limit: float = 30.0,
    **options: Any,
) -> tuple[RunSummary, StateStore]:
    """Run ``jobs`` to the end (failing after ``limit`` seconds) with stamina's waits off;
    returns the summary and a store reopened on the state file (closed by the caller)."""
    with stamina.set_testing(True, attempts=1000, cap=True):
        steps = local_steps
        async with engine(tmp_path, fal, jobs, local_steps=steps, **options) as (
            scheduler,
            _store,
            _sink,
        ):
            with anyio.fail_after(limit):
                summary = await scheduler.run()
    return summary, StateStore.open(tmp_path / "state.db")
