"""The simulated fal account: requests, their states, the concurrency limit and time.

One scheduler task owns time. It starts queued requests while the account has free
slots, completes running ones once both their drawn duration and their render are over,
times out queued requests whose ``X-Fal-Request-Timeout`` passed, and otherwise sleeps
until the next such moment or until something changes. Renders run in worker threads
under a CapacityLimiter. Whatever a request is waiting for, it holds no thread.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import math
import random
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
from anyio.abc import TaskGroup

from . import rules
from ._jobs import BILLABLE_UNITS_HEADER, FetchError, Job, Outcome, RenderedLike, State
from .config import EmulatorConfig
from .protocol import TIMEOUT_TYPE_HEADER
from .storage import FileStore

logger = logging.getLogger(__name__)

#: ``render(endpoint, arguments, fetch, *, seed, synthetic, ...)``, see ``render.py``.
Renderer = Callable[..., dict[str, Any]]


class Journal(Protocol):
    """Where a state directory keeps requests (see ``_persist.py``)."""

    def save_job(self, job_id: str, record: dict[str, Any]) -> None:
        """Write one request's record, replacing any earlier one."""

    def clear_jobs(self) -> None:
        """Forget every request."""


class _Signal:
    """A broadcast "something changed" that any number of tasks can sleep on."""

    def __init__(self) -> None:
        self._event = anyio.Event()

    def fire(self) -> None:
        """Wake every waiter; later waiters wait for the next fire."""
        self._event.set()
        self._event = anyio.Event()

    async def wait(self, timeout: float | None) -> bool:
        """True when fired, False when ``timeout`` seconds passed first."""
        event = self._event
        with anyio.move_on_after(timeout):
            await event.wait()
            return True
        return False


class Account:
    """One fal account: its requests, its queue and its concurrency limit."""

    def __init__(
        self, config: EmulatorConfig, store: FileStore, renderer: Renderer | None = None
    ) -> None:
        self.config = config
        self.store = store
        self._renderer = renderer
        self._limiter = anyio.CapacityLimiter(config.render_limit)
        self._signal = _Signal()
        self._tg: TaskGroup | None = None
        #: The storage/CDN origin inputs are read from and outputs published at; None means
        #: the origin each request came in through (a bare app on one origin).
        self.cdn_origin: str | None = None
        #: Where a state directory keeps the requests, if the emulator has one.
        self.journal: Journal | None = None
        self.reset()

    def reset(self) -> None:
        """Forget every request; renders still running are ignored when they finish."""
        if getattr(self, "jobs", None) and self.journal is not None:
            self.journal.clear_jobs()
        self.jobs: dict[str, Job] = {}
        self._waiting: list[Job] = []
        self._running: dict[str, Job] = {}
        self._rng = random.Random(self.config.seed)
        self.running_max = 0
        self._busy = 0.0
        self._first_submit: float | None = None
        self._last_done: float | None = None
        self._signal.fire()

    # -- what handlers call -------------------------------------------------------------

    def submit(
        self,
        endpoint: str,
        arguments: Any,
        *,
        origin: str,
        timeout: float | None = None,
        low_priority: bool = False,
        forced: Outcome | None = None,
    ) -> Job:
        """Accept a request into the queue (normal priority ahead of ``low``).

        Request ids come from the OS's randomness, not the seeded generator: two emulators
        started with the same seed (or one restarted) never hand out the same id, as fal
        never does; the seed still fixes job durations and random faults.
        """
        now = anyio.current_time()
        job = Job(
            id=str(uuid.uuid4()),
            endpoint=endpoint,
            arguments=arguments,
            input_sha256=self.input_sha256(arguments, self.cdn(origin)),
            origin=origin,
            duration=self.config.wall(self._rng.uniform(*self.config.job_seconds)),
            low_priority=low_priority,
            deadline=None if timeout is None else now + self.config.wall(timeout),
            forced=forced,
        )
        ahead = [j for j in self._waiting if not j.low_priority or low_priority]
        self._waiting.insert(len(ahead), job)
        self.jobs[job.id] = job
        self._first_submit = now if self._first_submit is None else self._first_submit
        self._changed(job)
        return job

    def cdn(self, origin: str) -> str:
        """The storage origin for a request that came in through ``origin``."""
        return self.cdn_origin or origin

    def restore(self, records: Iterable[dict[str, Any]], origin: str) -> None:
        """Take back the requests a state directory kept (before the scheduler starts).

        Queued requests queue again in their order; a request that was running starts
        again, from the queue's front, and runs for what was left of its duration (its
        render is redone: renders are deterministic); completed ones keep their results.
        """
        now = anyio.current_time()
        for data in sorted(records, key=lambda r: r["submitted_at"]):
            job = Job.from_record(data, origin, now)
            self.jobs[job.id] = job
            if job.state is State.IN_PROGRESS:
                left = max(0.0, job.duration - (time.time() - (job.started_at or time.time())))
                job.state, job.duration = State.IN_QUEUE, left
                job.log("The emulator restarted; the request resumes", "WARN")
                self._waiting.insert(0, job)
            elif job.state is State.IN_QUEUE:
                self._waiting.append(job)
        self._signal.fire()

    def _changed(self, job: Job) -> None:
        """Wake the scheduler and every watcher, and journal the request."""
        if self.journal is not None and self.jobs.get(job.id) is job:
            self.journal.save_job(job.id, job.record(anyio.current_time()))
        self._signal.fire()

    def waiting(self, endpoint: str) -> int:
        """How many requests for ``endpoint`` wait IN_QUEUE."""
        return sum(1 for j in self._waiting if j.endpoint == endpoint)

    def cancel(self, job: Job) -> bool:
        """Ask to cancel; False if the request had already completed.

        As fal documents it (fal-protocol §5): a queued request is removed and never runs
        (COMPLETED ``client_cancelled``, nothing billed); a running one only receives the
        signal, and by default (``cancel_running="finish"``) finishes, bills and returns
        its normal result. ``cancel_running="abort"`` ends it at once ``client_cancelled``
        and unbilled instead (the emulator's old behaviour, an app that honours cancels).
        """
        if job.state is State.COMPLETED:
            return False
        job.cancel_requested = True
        outcome = Outcome.request_error("client_cancelled")
        if job.state is State.IN_QUEUE:
            self._waiting.remove(job)
            job.cancelled = True
            job.log("Cancelled before it started", "WARN")
            self._complete(job, outcome, anyio.current_time())
        elif self.config.cancel_running == "abort":
            job.cancelled = True
            job.log("Cancellation requested; the app stopped", "WARN")
            self._finish_now(job, outcome)
        else:
            job.log("Cancellation requested; the app runs on", "WARN")
            self._changed(job)
        return True

    def regress(self, job: Job) -> bool:
        """Send a running request back to the queue front, as fal's retries do; once each."""
        cancelling = job.outcome is not None and job.outcome.error_type == "client_cancelled"
        if job.state is not State.IN_PROGRESS or job.regressed or cancelling:
            return False
        self._stop(job, anyio.current_time())
        job.state, job.regressed = State.IN_QUEUE, True
        self._waiting.insert(0, job)
        job.log("Runner lost; the request was requeued", "WARN")
        self._changed(job)
        return True

    def expired(self, job: Job) -> bool:
        """Whether the result is gone, by the TTL or by an ``expire`` fault."""
        ttl = self.config.result_ttl
        if job.expired or ttl is None or job.state is not State.COMPLETED:
            return job.expired
        return anyio.current_time() - job.completed > self.config.wall(ttl)

    def status_body(self, job: Job, with_logs: bool) -> dict[str, Any]:
        """The status JSON, with exactly the fields fal's clients index (§3)."""
        body: dict[str, Any] = {"status": job.state.value, "request_id": job.id, **job.urls}
        if job.state is State.IN_QUEUE:
            body["queue_position"] = self._waiting.index(job)
            return body
        body["logs"] = list(job.logs) if with_logs else None
        if job.state is State.COMPLETED:
            ran = job.started_at is not None
            seconds = (job.completed - job.started) / self.config.time_scale
            body["metrics"] = {"inference_time": round(seconds, 3)} if ran else {}
            if job.outcome and job.outcome.error:
                body["error"] = job.outcome.error
            if job.outcome and job.outcome.error_type:
                body["error_type"] = job.outcome.error_type
        return body

    async def changed(self, timeout: float | None) -> bool:
        """Sleep until anything in the account changes; False on timeout."""
        return await self._signal.wait(timeout)

    def input_sha256(self, arguments: Any, origin: str) -> str:
        """sha256 of the canonical input, each file URL replaced by its content's hash.

        So a job resubmitted after its media was uploaded again still counts as the same
        input, which is what the "nothing was submitted twice" checks need.
        """
        netloc = urlsplit(origin).netloc

        def canonical(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: canonical(v) for k, v in value.items()}
            if isinstance(value, list):
                return [canonical(v) for v in value]
            if isinstance(value, str) and value.startswith(("data:", "http")):
                sha = self.store.content_sha256(value, netloc)
                return f"sha256:{sha}" if sha else value
            return value

        text = json.dumps(canonical(arguments), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def stats(self) -> dict[str, Any]:
        """Counters over the requests: peaks, slot use and the per-request list."""
        now = anyio.current_time()
        busy = self._busy + sum(now - j.started for j in self._running.values())
        active = bool(self._waiting or self._running)
        end = now if active or self._last_done is None else self._last_done
        elapsed = 0.0 if self._first_submit is None else end - self._first_submit
        capacity = self.config.max_running * elapsed
        return {
            "submits": len(self.jobs),
            "distinct_inputs": len({j.input_sha256 for j in self.jobs.values()}),
            "queued": len(self._waiting),
            "running": len(self._running),
            "running_max": self.running_max,
            "slot_busy_seconds": round(busy, 3),
            "slot_utilisation": round(busy / capacity, 4) if capacity > 0 else 0.0,
            "billable_units": sum(j.billable_units for j in self.jobs.values()),
            "billed_requests": sum(1 for j in self.jobs.values() if j.billable_units > 0),
            "cancelled": sum(1 for j in self.jobs.values() if j.cancelled),
            "requests": [j.summary() for j in self.jobs.values()],
        }

    # -- the scheduler ------------------------------------------------------------------

    async def run(self) -> None:
        """The scheduler loop; runs until cancelled by the app's lifespan."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            while True:
                now = anyio.current_time()
                self._step(now)
                upcoming = [j.ends for j in self._running.values() if j.outcome is not None]
                upcoming += [j.deadline for j in self._waiting if j.deadline is not None]
                wake = min(upcoming, default=math.inf)
                await self._signal.wait(None if wake == math.inf else max(0.0, wake - now))

    def _step(self, now: float) -> None:
        for job in [j for j in self._waiting if j.deadline is not None and j.deadline <= now]:
            self._waiting.remove(job)
            self._complete(
                job, Outcome.request_error("request_timeout", **{TIMEOUT_TYPE_HEADER: "user"}), now
            )
        due = [
            (j, j.outcome)
            for j in self._running.values()
            if j.outcome is not None and j.ends <= now
        ]
        for job, outcome in due:
            self._complete(job, outcome, now)
        while self._waiting and len(self._running) < self.config.max_running:
            self._start(self._waiting.pop(0), now)

    def _start(self, job: Job, now: float) -> None:
        assert self._tg is not None
        job.state, job.started, job.started_at = State.IN_PROGRESS, now, time.time()
        job.ends, job.outcome, job.outputs = now + job.duration, None, []
        job.attempt += 1
        self._running[job.id] = job
        self.running_max = max(self.running_max, len(self._running))
        job.log(f"Running {job.endpoint}")
        self._tg.start_soon(self._execute, job, job.attempt)
        self._changed(job)

    def _stop(self, job: Job, now: float) -> None:
        """Release the job's slot and make its in-flight render stale."""
        if self._running.pop(job.id, None) is not None:
            self._busy += now - job.started
        job.attempt += 1

    def _finish_now(self, job: Job, outcome: Outcome) -> None:
        job.attempt += 1
        job.outcome, job.ends = outcome, anyio.current_time()
        self._changed(job)

    def _complete(self, job: Job, outcome: Outcome, now: float) -> None:
        self._stop(job, now)
        job.state, job.outcome = State.COMPLETED, outcome
        job.completed, job.completed_at = now, time.time()
        job.log(f"Request failed: {outcome.error}" if outcome.error else "Request completed")
        self._last_done = now
        self._changed(job)

    def _current(self, job: Job, attempt: int) -> bool:
        return self.jobs.get(job.id) is job and job.attempt == attempt

    async def _execute(self, job: Job, attempt: int) -> None:
        try:
            outcome = await self._evaluate(job, attempt)
        except Exception:
            logger.exception("emulator: rendering %s failed", job.endpoint)
            outcome = Outcome.request_error("internal_error")
            outcome.early = True
        if outcome is None or not self._current(job, attempt):
            return
        if outcome.early:
            self._finish_now(job, outcome)
        else:
            job.outcome = outcome
            self._changed(job)

    async def _evaluate(self, job: Job, attempt: int) -> Outcome | None:
        """The job's outcome: forced by a fault, refused by the rules, or rendered."""
        if job.forced is not None:
            return job.forced
        netloc = urlsplit(self.cdn(job.origin)).netloc
        details = rules.check(job.endpoint, job.arguments) or rules.moderate(job.arguments)
        details = details or [
            rules.detail(name, "file_download_error", f"Failed to download the file at {name}")
            for name, value in job.arguments.items()
            if name.endswith("_url") and isinstance(value, str)
            if self.store.content_sha256(value, netloc) is None
        ]
        if details:
            return Outcome.model_error(details)

        def fetch(url: str) -> bytes:
            try:
                return self.store.fetch(url, netloc)
            except ValueError as exc:
                raise FetchError(url) from exc

        # Imported late: render.py is heavy (PyAV, numpy) and a renderer may be injected.
        render: Renderer = self._renderer or importlib.import_module(".render", __package__).render
        seed = (self.config.seed * 1_000_003 + int(job.input_sha256[:8], 16)) % 2**32
        try:
            output = await anyio.to_thread.run_sync(
                lambda: render(
                    job.endpoint,
                    job.arguments,
                    fetch,
                    seed=seed,
                    synthetic=self.config.synthetic,
                    **self.config.render_options(),
                ),
                limiter=self._limiter,
            )
        except ValueError as exc:  # the contract for inputs the model cannot use
            return Outcome.model_error([_input_detail(exc, job.arguments)])
        if not self._current(job, attempt):
            return None
        body = await self._publish(output, job)
        units = rules.billable_units(job.endpoint, job.arguments, body)
        return Outcome(200, body, {BILLABLE_UNITS_HEADER: units})

    async def _publish(self, value: Any, job: Job) -> Any:
        """Store every rendered file and put its fal-style file object in its place."""
        if isinstance(value, RenderedLike):
            key = self.store.new_key(value.file_name)
            blob = await self.store.add(key, value.data, value.content_type)
            url = f"{self.cdn(job.origin)}/files/{key}"
            job.outputs.append({"url": url, "sha256": blob.sha256, "size": blob.size})
            return {
                "url": url,
                "content_type": value.content_type,
                "file_name": value.file_name,
                "file_size": blob.size,
                **value.extra,
            }
        if isinstance(value, dict):
            return {k: await self._publish(v, job) for k, v in value.items()}
        if isinstance(value, list):
            return [await self._publish(v, job) for v in value]
        return value


def _input_detail(exc: ValueError, arguments: dict[str, Any]) -> rules.Detail:
    """The 422 entry for an input the renderer refused: blame the argument it names.

    A failed fetch carries its URL; ``render.RenderError`` messages start ``field: ``.
    """
    if isinstance(exc, FetchError):
        name = next((k for k, v in arguments.items() if v == exc.url), None)
        return rules.detail(name, "file_download_error", str(exc))
    prefix, sep, _ = str(exc).partition(": ")
    return rules.detail(prefix if sep and prefix in arguments else None, "value_error", str(exc))
