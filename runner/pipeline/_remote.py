"""One remote job's way through fal: upload → submit → watch → fetch → download.

Each stage's calls go through :meth:`Policy.call` (retries, gates); what no retry fixes
comes back as the failure of that stage, and :meth:`Remote.run` asks the fault-policy
table what to do with it. Every transition is committed before the next step acts on it.
"""

from __future__ import annotations

import contextlib
import functools
import mimetypes
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, TypeVar

import anyio
import httpx

from .. import crashpoints
from ..errors import (
    FatalError,
    PermanentError,
    RaybatchError,
    RequestLost,
    ResultExpired,
    RetryableError,
    SubmitUnconfirmed,
)
from ..fal import FalClient, Status, Submission, classify_completed
from ..job import JobSpec, LocalFile, resolve_arguments, split_parent_ref, substitute
from ..outputs import OutputSink, file_size, find_files, output_paths
from ..state import ErrorInfo, JobState, Op, OutputFile, StateWriter, Transitions, Unfinished
from ._cancel import NOTES, cancel_url, ended_cancelled
from ._fallogs import LOG_WRITE_EVERY, FalLogs
from ._inputs import Once, parent_output
from ._options import Controls, RunObserver, RunOptions, RunSummary, Stopped
from ._policy import Action, Policy, Stage
from ._verify import NEEDS_FETCH, refetch_failed

_T = TypeVar("_T")

#: A broken status stream is tried again after this many polls (then twice as many, and
#: so on): a stream that keeps breaking costs few calls, one that recovers is used again.
_POLLS_BEFORE_STREAM = 4


@dataclass
class Progress:
    """What one job task knows of its job between transitions (the state file is the truth;
    this copy spares a read per step)."""

    state: JobState
    attempts: int  # paid submissions so far (accepted or ambiguous)
    ambiguous: int
    request: Submission | None
    result: dict[str, Any] | None
    error_class: str | None = None
    last_error: str | None = None
    resubmitted: int = field(default=0)
    #: The user asked to cancel this job (``raybatch cancel`` during the run).
    cancel_requested: bool = False
    #: fal was asked to cancel its request (once).
    cancel_sent: bool = False
    #: The logs fal sent for the current attempt (see ``FalLogs``).
    logs: FalLogs = field(default_factory=lambda: FalLogs())

    @classmethod
    def of(cls, row: Unfinished) -> Progress:
        """The progress of a job as the state file left it."""
        request = None
        if row.request_id and row.status_url and row.response_url:
            request = Submission(
                row.request_id, row.status_url, row.response_url, row.cancel_url or "", None
            )
        result = row.result if row.state is JobState.COMPLETED else None
        return cls(
            row.state, row.attempts, row.ambiguous, request, result, row.error_class, row.error
        )


class Hold:
    """A job's hold on one place of a semaphore (a remote slot, a download-queue place),
    released exactly once."""

    def __init__(self, semaphore: anyio.Semaphore, held: bool) -> None:
        self._semaphore = semaphore
        self.held = held

    async def ensure(self) -> None:
        """Hold a place (waiting for one if needed)."""
        if not self.held:
            await self._semaphore.acquire()
            self.held = True

    def release(self) -> None:
        """Give the place back, if held."""
        if self.held:
            self.held = False
            self._semaphore.release()


class _Failure(Exception):
    """Internal: ``error`` ended stage ``stage``; the policy table decides what follows."""

    def __init__(self, stage: Stage, error: RaybatchError) -> None:
        super().__init__(str(error))
        self.stage = stage
        self.error = error


class _Finished(Exception):
    """Internal: the job already reached its final state; nothing more to do."""


class _Cancel(Exception):
    """Internal: the job was cancelled before its submit."""


class Remote:
    """The stages of remote jobs, sharing a run's client, writer, policy and limits."""

    def __init__(
        self,
        *,
        options: RunOptions,
        writer: StateWriter,
        client: FalClient,
        sink: OutputSink,
        downloader: httpx.AsyncClient,
        policy: Policy,
        controls: Controls,
        observer: RunObserver,
        summary: RunSummary,
        outputs: dict[str, list[OutputFile]],
        download_queue: anyio.Semaphore,
    ) -> None:
        self.options = options
        self.writer = writer
        self.client = client
        self.sink = sink
        self.downloader = downloader
        self.policy = policy
        self.controls = controls
        self.observer = observer
        self.summary = summary
        self.outputs = outputs
        self.download_queue = download_queue
        self._uploads = Once()
        self._upload_limit = anyio.CapacityLimiter(options.uploads)
        self._download_limit = anyio.CapacityLimiter(options.downloads)

    async def run(self, spec: JobSpec, job: Progress, slot: Hold, place: Hold) -> JobState:
        """Take one job to done or failed (returned). Raises ``Stopped`` when it may not be
        submitted now, ``FatalError`` when the run must stop."""
        if job.request is not None and not self.client.owns(job.request.status_url):
            # Recorded on an origin this run does not send its key to (an emulator that
            # came back on another port): follow the request at this run's queue.
            rid = job.request.request_id
            job.request = Submission(rid, *self.client.request_urls(spec.endpoint, rid), None)
        while True:
            try:
                if job.result is None:
                    submission = await self._ensure_submitted(spec, job, slot)
                    status = await self._watch(spec, job, submission)
                    error = classify_completed(status)
                    if error is not None:
                        raise _Failure("status", error)
                    job.result, units = await self._fetch(submission)
                    await self.writer.apply(
                        *self._logs_op(spec, job),
                        Transitions.completed(spec.key, job.result, units),
                    )
                    crashpoints.reached("after_result")
                await place.ensure()
                slot.release()
                await self._download_all(spec, job.result, place)
                return JobState.DONE
            except _Finished:
                return JobState.FAILED
            except _Cancel:
                await self.writer.apply(Transitions.cancelled(spec.key, NOTES["unsubmitted"]))
                self.observer.on_state(spec, JobState.CANCELLED, NOTES["unsubmitted"])
                return JobState.CANCELLED
            except _Failure as failure:
                ended = await self._settle(spec, job, failure)
                if ended is not None:
                    return ended

    async def _settle(self, spec: JobSpec, job: Progress, failure: _Failure) -> JobState | None:
        """Apply the table's action to a stage's failure; the job's final state, or None
        when it goes on (as a new request)."""
        error, action = failure.error, self.policy.action(failure.stage, failure.error)
        if job.cancel_requested and job.result is None:
            # Cancelled by the user: however its request ended short of a result, it ends
            # here, never submitted again.
            never_ran = job.state is not JobState.RUNNING
            await self.writer.apply(ended_cancelled(spec.key, error.error_type, never_ran))
            self.observer.on_state(spec, JobState.CANCELLED, str(error))
            return JobState.CANCELLED
        if error.error_type == "client_cancelled" and job.error_class == "Cancelled":
            # The user cancelled this request and now asks to retry it (--retry-failed
            # re-attached to it in case it finished anyway): it did not, so submit anew.
            action = Action.RESUBMIT
        if action is Action.STOP:
            raise error
        if action is Action.RESUBMIT:
            if job.attempts - job.ambiguous < self.options.max_submissions:
                await self.writer.apply(
                    *self._logs_op(spec, job), Transitions.resubmit(spec.key, ErrorInfo.of(error))
                )
                job.request, job.result, job.logs = None, None, FalLogs()
                job.last_error = f"{type(error).__name__}: {error}"
                self.summary.resubmitted += 1
                reason = "result expired" if isinstance(error, ResultExpired) else str(error)
                self.observer.on_note(
                    f"{spec.key[:12]}: {reason}; resubmitting (a new request, paid again)"
                )
                self.observer.on_state(spec, JobState.PENDING, f"resubmitting after {error}")
                return None
            error = PermanentError(
                f"gave up after {job.attempts - job.ambiguous} paid submission(s); last error"
                f" {type(error).__name__}: {error}"
            )
        elif isinstance(error, RequestLost | ResultExpired):
            error = type(error)(
                f"{error}: request {job.request.request_id if job.request else '?'} is gone at"
                " fal; rerun with --resubmit-expired to render it again (billed again)",
                request_id=error.request_id,
            )
        elif isinstance(error, RetryableError):
            error.message = f"gave up after {self.options.retries} tries: {error.message}"
        info = ErrorInfo.of(error)
        if job.error_class == NEEDS_FETCH and failure.stage == "download":
            info = refetch_failed(error)
        await self.writer.apply(*self._logs_op(spec, job), Transitions.failed(spec.key, info))
        self.observer.on_state(spec, JobState.FAILED, str(error))
        return JobState.FAILED

    def _logs_op(self, spec: JobSpec, job: Progress) -> list[Op]:
        """The write of the job's unwritten log lines, if any (to go with a transition)."""
        logs = job.logs
        if not logs.unwritten:
            return []
        logs.unwritten = False
        logs.written_at = anyio.current_time()
        return [Transitions.logs(spec.key, logs.stored())]

    async def _stage(self, stage: Stage, call: Callable[[], Awaitable[_T]]) -> _T:
        try:
            return await self.policy.call(stage, call)
        except FatalError:
            raise
        except RaybatchError as exc:
            raise _Failure(stage, exc) from exc

    # -- submit ------------------------------------------------------------------------------

    async def _ensure_submitted(self, spec: JobSpec, job: Progress, slot: Hold) -> Submission:
        if job.request is not None:
            return job.request
        with self.controls.cancellable():
            await slot.ensure()
            try:
                arguments = await self._arguments(spec)
            except PermanentError as exc:
                raise _Failure("upload", exc) from exc
            while job.request is None:
                try:
                    await self._stage(
                        "submit", functools.partial(self._submit_once, spec, arguments, job)
                    )
                except _Failure as failure:
                    if not isinstance(failure.error, SubmitUnconfirmed):
                        raise
                    await self._ambiguous(spec, job, failure.error)
        if job.request is None:
            # The run stopped while this job waited (an upload, a pause, a gate).
            raise Stopped(self.controls.stop_reason or "stopped")
        return job.request

    async def _arguments(self, spec: JobSpec) -> dict[str, Any]:
        """The job's input as sent: local files uploaded, parents' outputs as URLs."""
        uploaded = {}
        for sha, local in spec.files.items():
            self.controls.check()
            self.observer.on_state(spec, JobState.UPLOADING, local.path.name)
            uploaded[sha] = await self._uploads.get(sha, functools.partial(self._upload, local))
        parents: dict[str, str] = {}

        def collect(text: str) -> str:
            if split_parent_ref(text) is not None:
                parents[text] = ""
            return text

        substitute(spec.arguments, collect)
        for ref in parents:
            parents[ref] = await self._parent_url(spec, ref)
        return resolve_arguments(spec, uploaded, parents)

    async def _parent_url(self, spec: JobSpec, ref: str) -> str:
        """A parent output as a URL fal can read: the URL fal gave it, or an upload of the
        local file (a local step's output); fal is never sent back what it holds."""
        found = parent_output(self.outputs, ref)
        if found.url:
            return found.url
        path = self.sink.path(found.path)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        local = LocalFile(path, found.sha256, found.size, content_type)
        self.observer.on_state(spec, JobState.UPLOADING, path.name)
        return await self._uploads.get(found.sha256, functools.partial(self._upload, local))

    async def _upload(self, local: LocalFile) -> str:
        async with self._upload_limit:
            url = await self._stage(
                "upload", lambda: self.client.upload(local.path, local.content_type)
            )
        self.observer.on_bytes("up", local.size)
        return url

    async def _submit_once(
        self, spec: JobSpec, arguments: dict[str, Any], job: Progress
    ) -> Submission:
        """One POST: the intent recorded before it, the answer right after."""
        if job.cancel_requested:
            raise _Cancel
        self.controls.check()
        cost = spec.estimated_cost or 0.0
        self.controls.reserve(cost)
        self.observer.on_state(spec, JobState.SUBMITTING, None)
        attempt = job.attempts + 1
        # From the intent to the recorded answer the outcome is unknowable after a crash;
        # shield it so a cancel (second Ctrl-C) never widens that window.
        with anyio.CancelScope(shield=True):
            await self.writer.apply(
                Transitions.intent(spec.key, attempt, spec.estimated_cost, arguments)
            )
            crashpoints.reached("after_intent")
            try:
                sub = await self.client.submit(spec.endpoint, arguments)
            except SubmitUnconfirmed:
                raise  # settled by ``_ambiguous``: it may exist at fal
            except RaybatchError:
                # A definite refusal (429, 503, 422, 401...): nothing was created at fal,
                # so the job is plainly pending again (a crash now must not count it as
                # ambiguous).
                await self.writer.apply(Transitions.unsent(spec.key))
                self.controls.release(cost)
                raise
            crashpoints.reached("after_post")
            await self.writer.apply(
                Transitions.submitted(
                    spec.key, sub.request_id, sub.status_url, sub.response_url, sub.cancel_url
                )
            )
            crashpoints.reached("after_record")
            # Set inside the shield: once recorded, the job holds a request to follow
            # even if the run stops right now.
            job.request, job.attempts, job.state = sub, attempt, JobState.QUEUED
        self.observer.on_state(spec, JobState.QUEUED, sub.request_id)
        if job.cancel_requested:
            await self.request_cancel(spec, job)
        return sub

    async def _ambiguous(self, spec: JobSpec, job: Progress, error: SubmitUnconfirmed) -> None:
        """A POST whose answer was lost: counted as paid; resubmitted or failed per policy."""
        resubmit = self.policy.action("submit", error) is Action.RESUBMIT
        with anyio.CancelScope(shield=True):
            await self.writer.apply(Transitions.ambiguous(spec.key, resubmit=resubmit))
        job.attempts += 1
        job.ambiguous += 1
        self.summary.ambiguous += 1
        self.observer.on_note(
            f"{spec.key[:12]}: submit unconfirmed ({error});"
            f" policy --on-ambiguous {self.options.on_ambiguous}"
        )
        if not resubmit:
            self.observer.on_state(spec, JobState.FAILED, "ambiguous submit")
            raise _Finished

    # -- watch and fetch -----------------------------------------------------------------------

    async def _watch(self, spec: JobSpec, job: Progress, sub: Submission) -> Status:
        """Follow the request to COMPLETED: its status stream, or polls while the stream
        is broken, silent or refused (then the stream again, less and less often)."""
        streaming = self.options.watch == "stream"
        polls_before_stream = _POLLS_BEFORE_STREAM
        while True:
            if streaming:
                try:
                    return await self._stream(spec, job, sub)
                except RetryableError:
                    pass  # broken, silent, refused: poll for a while
            status = await self._poll(spec, job, sub, polls=polls_before_stream)
            if status is not None:
                return status
            polls_before_stream *= 2

    async def _stream(self, spec: JobSpec, job: Progress, sub: Submission) -> Status:
        try:
            events = self.client.stream_status(
                sub.status_url, logs=True, idle=self.options.stream_idle
            )
            async with contextlib.aclosing(events) as statuses:
                async for status in statuses:
                    await self._note_status(spec, job, status)
                    if status.state == "COMPLETED":
                        return status
        except FatalError:
            raise
        except RetryableError:
            raise
        except RaybatchError as exc:
            raise _Failure("status", exc) from exc
        raise AssertionError("the status stream ends with COMPLETED or an error")

    async def _poll(
        self, spec: JobSpec, job: Progress, sub: Submission, *, polls: int | None
    ) -> Status | None:
        """Poll until COMPLETED, or ``polls`` times; None when the polls ran out."""
        delay = self.options.poll_initial
        made = 0
        while polls is None or made < polls:
            await self.policy.gates.polls.wait()
            status = await self._stage(
                "status", lambda: self.client.status(sub.status_url, logs=True)
            )
            made += 1
            await self._note_status(spec, job, status)
            if status.state == "COMPLETED":
                return status
            await anyio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(self.options.poll_max, delay * 1.5)
        return None

    async def _note_status(self, spec: JobSpec, job: Progress, status: Status) -> None:
        job.logs.merge(status.logs)
        if status.state == "IN_PROGRESS" and job.state is not JobState.RUNNING:
            await self.writer.apply(*self._logs_op(spec, job), Transitions.running(spec.key))
            job.state = JobState.RUNNING
            self.observer.on_state(spec, JobState.RUNNING, None)
        elif status.state == "IN_QUEUE" and job.state is JobState.RUNNING:
            await self.writer.apply(*self._logs_op(spec, job), Transitions.queued_again(spec.key))
            job.state = JobState.QUEUED
            self.observer.on_state(spec, JobState.QUEUED, "back in fal's queue")
        elif (
            status.state != "COMPLETED"
            and job.logs.unwritten
            and anyio.current_time() - job.logs.written_at >= LOG_WRITE_EVERY
        ):
            await self.writer.apply(*self._logs_op(spec, job))

    async def _fetch(self, sub: Submission) -> tuple[dict[str, Any], float | None]:
        result = await self._stage("result", lambda: self.client.result(sub.response_url))
        return result.data, result.billable_units

    # -- download ------------------------------------------------------------------------------

    async def _download_all(self, spec: JobSpec, result: dict[str, Any], place: Hold) -> None:
        files = find_files(result)
        if not files:
            raise _Failure("result", PermanentError("the result holds no output file"))
        outputs: list[OutputFile] = []
        self.observer.on_state(spec, JobState.DOWNLOADING, None)
        async with self._download_limit:
            place.release()
            for (field_path, file), rel in zip(
                files, output_paths(PurePosixPath(spec.output), files), strict=True
            ):
                fetch = functools.partial(
                    self.sink.download,
                    self.downloader,
                    file["url"],
                    rel,
                    expected_size=file_size(file.get("file_size")),
                    on_bytes=functools.partial(self.observer.on_bytes, "down"),
                )
                got = await self._stage("download", fetch)
                outputs.append(
                    OutputFile(
                        str(rel),
                        got.sha256,
                        got.size,
                        file["url"],
                        field_path,
                        self.sink.stamp(rel),
                    )
                )
        crashpoints.reached("after_rename")
        await self.writer.apply(Transitions.done(spec.key, outputs))
        crashpoints.reached("after_done")
        self.observer.on_state(spec, JobState.DONE, None)
        self.record_outputs(spec.key, outputs)

    async def request_cancel(self, spec: JobSpec, job: Progress) -> str:
        """Cancel the job (``raybatch cancel`` during the run): its task ends it when it
        can, as fal reports; fal is asked (once) to cancel the request it holds. Returns
        the case of :data:`NOTES` that says what happens next."""
        job.cancel_requested = True
        if job.request is None:
            return "submitting"  # its task ends it before the POST, or cancels right after
        if job.result is not None or job.cancel_sent:
            return "already_completed" if job.result is not None else "requested"
        job.cancel_sent = True
        sub = job.request
        url = cancel_url(self.client, spec.endpoint, sub.request_id, sub.cancel_url)
        return await self.policy.call("status", lambda: self.client.cancel(url))

    def record_outputs(self, key: str, outputs: list[OutputFile]) -> None:
        """Keep a done job's outputs for its children's inputs."""
        self.outputs[key] = outputs
