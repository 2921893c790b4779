"""The pipeline: upload → submit → watch → fetch → download, for every job, resumably.

Shape (anyio structured concurrency, after aiometer's "wait for capacity, then spawn"):

* one task group; a feeder spawns a task per job only once a *slot* is free, so at most
  ``concurrency + queue_buffer`` requests exist at fal and only as many job tasks exist
  here — a 100k-job batch never has 100k coroutines;
* a slot is held from submit until the result is fetched; uploads and downloads have
  their own limiters, so a job waiting for bytes never keeps a remote slot idle;
* a fetched result then waits for a download in a queue of as many places as there are
  slots, and its slot is given up once it has a place. Downloads that fall behind (short
  jobs, a slow disk or link) so slow submission down instead of piling up job tasks and
  results without bound: 5k jobs of 0.1 s once had 3,600 of them waiting;
* status comes from fal's SSE stream (one request per job, no polling delay); if the
  stream breaks, that job falls back to adaptive polling under a global rate limit;
* every transition is committed through the single :class:`~runner.state.StateWriter`
  before the pipeline acts on it.

Retries are decided here and only here, by error class (see ``errors.py``).
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol, TypeVar

import anyio
import httpx

from .. import crashpoints, outputs as dl
from ..errors import (
    FatalError,
    PermanentError,
    RateLimited,
    RaybatchError,
    RemoteJobError,
    RequestLost,
    ResultExpired,
    RetryableError,
    SubmitUnconfirmed,
)
from ..fal import FalClient, Status, Submission, classify_completed
from ..job import JobSpec, LocalFile, resolve_arguments
from ..net import tls_context
from ..outputs import file_size, find_files, output_paths
from ..plan import JobList
from ..state import ErrorInfo, OutputFile, StateStore, StateWriter, Transitions, Unfinished

_T = TypeVar("_T")

#: States in which a job re-attaches to what exists at fal instead of submitting.
_ATTACHED = frozenset({"queued", "running", "completed"})


@dataclass(frozen=True)
class RunOptions:
    """Knobs of one run; the defaults suit a real fal account."""

    concurrency: int = 8
    #: Requests kept waiting at fal beyond ``concurrency``, so a freed slot starts at once.
    queue_buffer: int | None = None
    uploads: int = 4
    downloads: int = 4
    status_per_second: float = 20.0
    max_attempts: int = 3
    stage_attempts: int = 8
    on_ambiguous: Literal["resubmit", "fail"] = "resubmit"
    resubmit_expired: bool = False
    watch: Literal["stream", "poll"] = "stream"
    max_cost: float | None = None
    grace: float = 120.0
    poll_initial: float = 1.0
    poll_max: float = 15.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0

    @property
    def slots(self) -> int:
        """Requests allowed to exist at fal at once."""
        buffer = self.queue_buffer
        if buffer is None:
            buffer = max(2, math.ceil(self.concurrency * 0.1))
        return self.concurrency + buffer


class RunObserver(Protocol):
    """What the engine tells whoever draws progress (the engine draws nothing itself)."""

    def on_state(self, spec: JobSpec, state: str, detail: str | None) -> None:
        """A job moved to ``state`` (uploading, submitting, queued, running, downloading,
        done, failed, pending, cancelled)."""

    def on_bytes(self, direction: Literal["up", "down"], count: int) -> None:
        """``count`` more bytes moved."""

    def on_note(self, message: str) -> None:
        """Something the user should read (a policy applied, a budget reached)."""


class NullObserver:
    """An observer that ignores everything."""

    def on_state(self, spec: JobSpec, state: str, detail: str | None) -> None:
        """Ignore."""

    def on_bytes(self, direction: Literal["up", "down"], count: int) -> None:
        """Ignore."""

    def on_note(self, message: str) -> None:
        """Ignore."""


@dataclass
class RunSummary:
    """How a run ended."""

    done: int = 0
    failed: int = 0
    cancelled: int = 0
    not_started: int = 0
    ambiguous: int = 0
    resubmitted: int = 0
    interrupted: bool = False
    budget_stopped: bool = False
    fatal: RaybatchError | None = None
    spent: float = 0.0


class _Stop(Exception):
    """Internal: this job must not be submitted now (draining, budget, fatal error)."""


class _Finished(Exception):
    """Internal: the job already reached its final state; nothing more to do."""


class _Resubmit(Exception):
    """Internal: drop the current request and submit the job again."""

    def __init__(self, cause: RaybatchError) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _RateGate:
    """A minimal GCRA pacer: at most ``rate`` passes per second, no bursts."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        at = max(now, self._next)
        self._next = at + self._interval
        if at > now:
            await anyio.sleep(at - now)


class _Once:
    """Run an async producer once per key; concurrent callers share its outcome."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._running: dict[str, anyio.Event] = {}

    async def get(self, key: str, produce: Callable[[], Awaitable[str]]) -> str:
        while key not in self._values:
            event = self._running.get(key)
            if event is not None:
                await event.wait()
                continue
            event = self._running[key] = anyio.Event()
            try:
                self._values[key] = await produce()
            finally:
                del self._running[key]
                event.set()
        return self._values[key]


class Scheduler:
    """Runs a set of jobs to completion against fal, recording everything in the state."""

    def __init__(
        self,
        jobs: Sequence[JobSpec],
        store: StateStore,
        client: FalClient,
        output_dir: Path,
        options: RunOptions | None = None,
        observer: RunObserver | None = None,
        *,
        downloader: httpx.AsyncClient | None = None,
    ) -> None:
        self.jobs = JobList.of(jobs)
        self.store = store
        self.client = client
        self.output_dir = output_dir
        self.options = options or RunOptions()
        self.observer: RunObserver = observer or NullObserver()
        self._downloader = downloader
        self.summary = RunSummary()
        self._writer = StateWriter(store)
        self._slots = anyio.Semaphore(self.options.slots)
        self._download_queue = anyio.Semaphore(self.options.slots)
        self._upload_limit = anyio.CapacityLimiter(self.options.uploads)
        self._download_limit = anyio.CapacityLimiter(self.options.downloads)
        self._status_gate = _RateGate(self.options.status_per_second)
        self._uploads = _Once()
        self._submit_paused_until = 0.0
        self._stop_submitting: str | None = None
        self._spent = 0.0

    # -- control ---------------------------------------------------------------------------

    def drain(self) -> None:
        """First signal: submit nothing new; let in-flight jobs finish within the grace.

        Must be called from the event loop's thread (the signal task is).
        """
        self.summary.interrupted = True
        self._stop(
            f"interrupted: submitting nothing new; waiting up to {self.options.grace:g}s for"
            " in-flight jobs (press Ctrl-C again to leave them running at fal)"
        )
        if self._jobs_scope is not None:
            self._jobs_scope.deadline = min(
                self._jobs_scope.deadline, anyio.current_time() + self.options.grace
            )

    def abort(self) -> None:
        """Second signal: stop at once; in-flight requests stay re-attachable."""
        self.summary.interrupted = True
        if self._jobs_scope is not None:
            self._jobs_scope.cancel()

    def _stop(self, reason: str) -> None:
        if self._stop_submitting is None:
            self._stop_submitting = reason
            self.observer.on_note(reason)

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> RunSummary:
        """Run every job not yet finished; returns how it went (never raises for a job)."""
        rows = self.store.unfinished()
        own_client = self._downloader is None
        downloader = self._downloader or httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=10.0), follow_redirects=False, verify=tls_context()
        )
        try:
            async with anyio.create_task_group() as root:
                await root.start(self._writer.run)
                try:
                    with anyio.CancelScope() as jobs_scope:
                        self._jobs_scope = jobs_scope
                        async with anyio.create_task_group() as jobs_group:
                            try:
                                await self._feed(jobs_group, rows, downloader)
                            except FatalError as exc:
                                # The feed's own transitions (settling ambiguous submits)
                                # could not be recorded: stop as a job's fatal error does.
                                self.summary.fatal = self.summary.fatal or exc
                                self._stop(f"stopping: {exc}")
                                jobs_group.cancel_scope.cancel()
                finally:
                    self._writer.close()
        finally:
            if own_client:
                await downloader.aclose()
        self._finish_summary()
        return self.summary

    _jobs_scope: anyio.CancelScope | None = None

    async def _feed(
        self,
        group: anyio.abc.TaskGroup,
        rows: Mapping[str, Unfinished],
        downloader: httpx.AsyncClient,
    ) -> None:
        # Finished jobs have no row here (see StateStore.unfinished): nothing to do. A job's
        # spec is built when its task starts: 50k pending specs up front delayed the first
        # submit of a resumed 100k-job run by half a second.
        jobs = self.jobs
        todo = [i for i, key in enumerate(jobs.keys) if key in rows]

        def state_of(i: int) -> str:
            return rows[jobs.keys[i]].state

        # Jobs already holding a request (or a fetched result) go first: they cost nothing
        # more, and re-attaching early keeps their results from expiring at fal.
        attached = [i for i in todo if state_of(i) in _ATTACHED]
        fresh = [i for i in todo if state_of(i) == "pending"]
        ambiguous = [i for i in todo if state_of(i) == "submitting"]
        progress = {jobs.keys[i]: _Progress.of(rows[jobs.keys[i]]) for i in attached + ambiguous}
        if ambiguous:
            resubmit = self.options.on_ambiguous == "resubmit"
            await self._writer.apply(
                *(Transitions.ambiguous(jobs.keys[i], resubmit=resubmit) for i in ambiguous)
            )
            for i in ambiguous:
                progress[jobs.keys[i]].ambiguous += 1
            self.summary.ambiguous += len(ambiguous)
            self.observer.on_note(
                f"{len(ambiguous)} submit(s) were interrupted before fal's answer was recorded;"
                f" policy --on-ambiguous {self.options.on_ambiguous}"
            )
            if resubmit:
                fresh = ambiguous + fresh
            else:
                for i in ambiguous:
                    self.observer.on_state(jobs[i], "failed", "ambiguous submit")
        for i in attached:
            job = progress[jobs.keys[i]]
            holds_slot = job.result is None
            await (self._slots if holds_slot else self._download_queue).acquire()
            group.start_soon(self._job, jobs[i], job, holds_slot, downloader)
        for i in fresh:
            await self._slots.acquire()
            if self._stop_submitting is not None:
                self._slots.release()
                break
            key = jobs.keys[i]
            job = progress[key] if key in progress else _Progress.of(rows[key])
            group.start_soon(self._job, jobs[i], job, True, downloader)

    # -- one job ---------------------------------------------------------------------------

    async def _job(
        self, spec: JobSpec, job: _Progress, holds_slot: bool, downloader: httpx.AsyncClient
    ) -> None:
        """One job to its end; it starts holding a slot, or else a download-queue place."""
        slot = _Hold(self._slots, holds_slot)
        place = _Hold(self._download_queue, not holds_slot)
        try:
            await self._job_inner(spec, job, slot, place, downloader)
        except _Stop:
            self.observer.on_state(spec, "pending", self._stop_submitting)
        except FatalError as exc:
            self.summary.fatal = self.summary.fatal or exc
            self._stop(f"stopping: {exc}")
            # Cancel the jobs, not the writer: transitions already underway still commit.
            if self._jobs_scope is not None:
                self._jobs_scope.cancel()
        finally:
            slot.release()
            place.release()

    async def _job_inner(
        self,
        spec: JobSpec,
        job: _Progress,
        slot: _Hold,
        place: _Hold,
        downloader: httpx.AsyncClient,
    ) -> None:
        while True:
            try:
                if job.result is None:
                    submission = await self._ensure_submitted(spec, job, slot)
                    status = await self._watch(spec, job, submission)
                    error = classify_completed(status)
                    if error is not None:
                        raise _Resubmit(error) if isinstance(error, RemoteJobError) else error
                    job.result, units = await self._fetch(spec, submission)
                    await self._writer.apply(Transitions.completed(spec.key, job.result, units))
                    crashpoints.reached("after_result")
                await place.ensure()
                slot.release()
                await self._download_all(spec, job.result, downloader, place)
                return
            except _Finished:
                return
            except _Resubmit as again:
                await self._writer.apply(
                    Transitions.retry(spec.key, ErrorInfo.of(again.cause), resubmit=True)
                )
                job.request = None
                job.last_error = f"{type(again.cause).__name__}: {again.cause}"
                self.summary.resubmitted += 1
                self.observer.on_state(spec, "pending", f"resubmitting after {again.cause}")
            except (PermanentError, RetryableError) as exc:
                # A retryable error that got here has used up its stage's retries: the job
                # fails with it, but a fetched result stays recorded, so `--retry-failed`
                # downloads again instead of paying again.
                if isinstance(exc, RetryableError):
                    exc = _gave_up(exc, self.options.stage_attempts)
                await self._writer.apply(Transitions.failed(spec.key, ErrorInfo.of(exc)))
                self.observer.on_state(spec, "failed", str(exc))
                return

    # -- stages ----------------------------------------------------------------------------

    async def _ensure_submitted(self, spec: JobSpec, job: _Progress, slot: _Hold) -> Submission:
        if job.request is not None:
            return job.request
        # Interrupted submits (ambiguous) are not the job's fault: only attempts that
        # reached fal and failed there count against the limit.
        if job.attempts - job.ambiguous >= self.options.max_attempts:
            last = f"; last error {job.last_error}" if job.last_error else ""
            raise PermanentError(f"gave up after {job.attempts} submission(s){last}")
        await slot.ensure()
        uploaded = {}
        for sha, local in spec.files.items():
            self._check_can_submit()
            self.observer.on_state(spec, "uploading", local.path.name)
            uploaded[sha] = await self._uploads.get(sha, functools.partial(self._upload, local))
        job.request = await self._submit(spec, resolve_arguments(spec, uploaded), job)
        job.state = "queued"
        return job.request

    def _check_can_submit(self) -> None:
        if self._stop_submitting is not None:
            raise _Stop(self._stop_submitting)

    async def _upload(self, local: LocalFile) -> str:
        async with self._upload_limit:
            url = await self._retrying(lambda: self.client.upload(local.path, local.content_type))
        self.observer.on_bytes("up", local.size)
        return url

    def _reserve_budget(self, cost: float) -> None:
        """Count ``cost`` as spent before the POST, or stop submitting if it would pass
        --max-cost. Reserving (rather than counting after fal answers) keeps many
        concurrent submits from all slipping under the cap at once."""
        limit = self.options.max_cost
        if limit is not None and self._spent + cost > limit + 1e-9:
            self.summary.budget_stopped = True
            self._stop(
                f"budget reached: ${self._spent:.2f} spent in this run and the next job"
                f" (${cost:.2f}) would pass --max-cost ${limit:.2f}; submitting nothing more"
            )
            raise _Stop(self._stop_submitting)
        self._spent += cost
        self.summary.spent = self._spent

    def _release_budget(self, cost: float) -> None:
        """fal refused the POST outright: nothing was bought."""
        self._spent -= cost
        self.summary.spent = self._spent

    async def _submit(self, spec: JobSpec, arguments: dict[str, Any], job: _Progress) -> Submission:
        """POST the job, recording the intent first and the request id right after.

        Each POST that may have reached fal gets its own attempt number, so the attempts
        table lists every request that could exist (and bill) there.
        """
        cost = spec.estimated_cost or 0.0
        for n in range(1, self.options.stage_attempts + 1):
            attempt = job.attempts + 1
            self._check_can_submit()
            pause = self._submit_paused_until - time.monotonic()
            if pause > 0:
                await anyio.sleep(pause)
                continue
            self._reserve_budget(cost)
            self.observer.on_state(spec, "submitting", None)
            # From the intent to the recorded request id the outcome is unknowable after a
            # crash; shield it so a cancel (second Ctrl-C) never widens that window.
            with anyio.CancelScope(shield=True):
                await self._writer.apply(Transitions.intent(spec.key, attempt))
                crashpoints.reached("after_intent")
                try:
                    sub = await self.client.submit(spec.endpoint, arguments)
                except SubmitUnconfirmed as exc:
                    resubmit = self.options.on_ambiguous == "resubmit"
                    await self._writer.apply(Transitions.ambiguous(spec.key, resubmit=resubmit))
                    job.attempts, job.ambiguous = attempt, job.ambiguous + 1
                    self.summary.ambiguous += 1
                    self.observer.on_note(
                        f"{spec.key[:12]}: submit unconfirmed ({exc});"
                        f" policy --on-ambiguous {self.options.on_ambiguous}"
                    )
                    if not resubmit:
                        self.observer.on_state(spec, "failed", "ambiguous submit")
                        raise _Finished from None  # the transition above failed the job
                    delay = self._backoff(n)
                except RaybatchError as exc:
                    # A definite refusal (429, 503, 422, 401...): nothing was created at fal,
                    # so the job is plainly pending again (a crash now must not count it as
                    # ambiguous).
                    await self._writer.apply(Transitions.unsent(spec.key))
                    self._release_budget(cost)
                    if not isinstance(exc, RetryableError):
                        raise
                    if n == self.options.stage_attempts:
                        raise PermanentError(f"submit kept failing: {exc}") from exc
                    delay = self._backoff(n)
                    if isinstance(exc, RateLimited):
                        delay = exc.retry_after if exc.retry_after is not None else delay
                        self._submit_paused_until = time.monotonic() + delay
                        self.observer.on_note(
                            f"fal is rate limiting submits (HTTP 429); pausing them {delay:.1f}s"
                        )
                        continue
                else:
                    crashpoints.reached("after_post")
                    await self._writer.apply(
                        Transitions.submitted(
                            spec.key,
                            attempt,
                            sub.request_id,
                            sub.status_url,
                            sub.response_url,
                            sub.cancel_url,
                        )
                    )
                    crashpoints.reached("after_record")
                    job.attempts = attempt
                    self.observer.on_state(spec, "queued", sub.request_id)
                    return sub
            await anyio.sleep(delay)
        raise PermanentError("submit kept failing")

    async def _watch(self, spec: JobSpec, job: _Progress, sub: Submission) -> Status:
        try:
            if self.options.watch == "stream":
                try:
                    async for status in self.client.stream_status(sub.status_url):
                        await self._note_status(spec, job, status)
                        if status.state == "COMPLETED":
                            return status
                except RetryableError:
                    pass  # The stream broke; polling picks up from where it left off.
            return await self._poll(spec, job, sub)
        except RequestLost as exc:
            # fal does not know the request (or, with --local, the emulator was restarted).
            raise _Resubmit(exc) from exc

    async def _poll(self, spec: JobSpec, job: _Progress, sub: Submission) -> Status:
        delay = self.options.poll_initial
        while True:
            await self._status_gate.wait()
            status = await self._retrying(lambda: self.client.status(sub.status_url))
            await self._note_status(spec, job, status)
            if status.state == "COMPLETED":
                return status
            await anyio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(self.options.poll_max, delay * 1.5)

    async def _note_status(self, spec: JobSpec, job: _Progress, status: Status) -> None:
        if status.state == "IN_PROGRESS" and job.state != "running":
            await self._writer.apply(Transitions.running(spec.key))
            job.state = "running"
            self.observer.on_state(spec, "running", None)
        elif status.state == "IN_QUEUE" and job.state == "running":
            await self._writer.apply(Transitions.queued_again(spec.key))
            job.state = "queued"
            self.observer.on_state(spec, "queued", "back in fal's queue")

    async def _fetch(self, spec: JobSpec, sub: Submission) -> tuple[dict[str, Any], float | None]:
        try:
            result = await self._retrying(lambda: self.client.result(sub.response_url))
        except (RequestLost, ResultExpired) as exc:
            if self.options.resubmit_expired:
                self.observer.on_note(f"{spec.key[:12]}: result expired; resubmitting (paid again)")
                raise _Resubmit(ResultExpired(str(exc), request_id=sub.request_id)) from exc
            raise ResultExpired(
                f"the result of request {sub.request_id} expired before it was fetched;"
                " rerun with --resubmit-expired to render it again (billed again)",
                request_id=sub.request_id,
            ) from exc
        except RemoteJobError as exc:
            raise _Resubmit(exc) from exc
        return result.data, result.billable_units

    async def _download_all(
        self,
        spec: JobSpec,
        result: dict[str, Any],
        downloader: httpx.AsyncClient,
        place: _Hold,
    ) -> None:
        files = find_files(result)
        if not files:
            raise PermanentError("the result holds no output file")
        outputs: list[OutputFile] = []
        self.observer.on_state(spec, "downloading", None)
        async with self._download_limit:
            place.release()
            for (field_path, file), rel in zip(
                files, output_paths(PurePosixPath(spec.output), files), strict=True
            ):
                fetch = functools.partial(
                    dl.download,
                    downloader,
                    file["url"],
                    self.output_dir / rel,
                    root=self.output_dir,
                    expected_size=file_size(file.get("file_size")),
                    on_bytes=functools.partial(self.observer.on_bytes, "down"),
                )
                got = await self._retrying(fetch)
                outputs.append(OutputFile(str(rel), got.sha256, got.size, file["url"], field_path))
        crashpoints.reached("after_rename")
        await self._writer.apply(Transitions.done(spec.key, outputs))
        crashpoints.reached("after_done")
        self.observer.on_state(spec, "done", None)

    # -- retry helpers -----------------------------------------------------------------------

    def _backoff(self, n: int) -> float:
        """Exponential backoff with full jitter (attempt ``n`` counts from 1)."""
        cap = min(self.options.backoff_max, self.options.backoff_initial * 2 ** (n - 1))
        return random.uniform(cap / 2, cap)

    async def _retrying(self, call: Callable[[], Awaitable[_T]]) -> _T:
        """Call until it succeeds, retrying retryable errors up to ``stage_attempts`` times.

        Remote job errors are not retried here: they need a new submission.
        """
        for n in range(1, self.options.stage_attempts + 1):
            try:
                return await call()
            except RemoteJobError:
                raise
            except RateLimited as exc:
                if n == self.options.stage_attempts:
                    raise
                await anyio.sleep(exc.retry_after or self._backoff(n))
            except RetryableError:
                if n == self.options.stage_attempts:
                    raise
                await anyio.sleep(self._backoff(n))
        raise AssertionError("unreachable")

    def _finish_summary(self) -> None:
        states = self.store.states()
        keys = self.jobs.keys
        for key in keys:
            state = states.get(key)
            if state == "done":
                self.summary.done += 1
            elif state == "failed":
                self.summary.failed += 1
            elif state == "cancelled":
                self.summary.cancelled += 1
            else:
                self.summary.not_started += 1
        self.summary.spent = self._spent


@dataclass
class _Progress:
    """What one job task knows of its job between transitions (the state file is the truth;
    this copy spares a read per step)."""

    state: str
    attempts: int
    ambiguous: int
    request: Submission | None
    result: dict[str, Any] | None
    last_error: str | None = None

    @classmethod
    def of(cls, row: Unfinished) -> _Progress:
        request = None
        if row.request_id and row.status_url and row.response_url:
            request = Submission(
                row.request_id, row.status_url, row.response_url, row.cancel_url or "", None
            )
        result = row.result if row.state == "completed" else None
        return cls(row.state, row.attempts, row.ambiguous, request, result, row.error)


class _Hold:
    """A job's hold on one place of a semaphore (a remote slot, a download-queue place),
    released exactly once."""

    def __init__(self, semaphore: anyio.Semaphore, held: bool) -> None:
        self._semaphore = semaphore
        self._held = held

    async def ensure(self) -> None:
        if not self._held:
            await self._semaphore.acquire()
            self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._semaphore.release()


def _gave_up(exc: RetryableError, tries: int) -> RetryableError:
    """The same error, its message saying that retrying did not help."""
    exc.message = f"gave up after {tries} tries: {exc.message}"
    return exc


@dataclass(frozen=True)
class CancelOutcome:
    """What ``raybatch cancel`` did to one job."""

    key: str
    label: str
    note: str
    cancelled: bool


_CANCEL_NOTES = {
    "requested": "cancellation requested at fal (a job already running may still finish and bill)",
    "already_completed": "already completed at fal; the next run downloads it",
    "not_found": "unknown to fal; marked cancelled",
}


async def cancel_requests(
    store: StateStore, keys: Sequence[str], client: FalClient
) -> list[CancelOutcome]:
    """Cancel the requests of these jobs that are at fal, and mark them cancelled.

    Jobs not yet submitted stay pending (the next ``run`` submits them); a request fal
    already completed is left alone so its paid-for result is still downloaded.
    """
    wanted = set(keys)
    outcomes: list[CancelOutcome] = []
    ops = []
    for row in store.rows():
        if row.key not in wanted or row.state not in ("queued", "running") or not row.request_id:
            continue
        cancel_url = row.cancel_url or client.request_urls(row.endpoint, row.request_id)[2]
        answer = await client.cancel(cancel_url)
        cancelled = answer != "already_completed"
        if cancelled:
            ops.append(Transitions.cancelled(row.key, _CANCEL_NOTES[answer]))
        label = f"{row.clip or '-'}/{row.prompt or '-'}"
        outcomes.append(CancelOutcome(row.key, label, _CANCEL_NOTES[answer], cancelled))
    if ops:
        store.execute_batch(ops)
    return outcomes
