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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
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
from ..state import ErrorInfo, JobState, OutputFile, StateWriter, Transitions, Unfinished
from ._options import Controls, RunObserver, RunOptions, RunSummary, Stopped
from ._policy import Action, Policy, Stage

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


class _Once:
    """Run an async producer once per key; concurrent callers share its outcome."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._running: dict[str, anyio.Event] = {}

    async def get(self, key: str, produce: Callable[[], Awaitable[str]]) -> str:
        """The value for ``key``, produced by the first caller."""
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
        self._uploads = _Once()
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
                    await self.writer.apply(Transitions.completed(spec.key, job.result, units))
                    crashpoints.reached("after_result")
                await place.ensure()
                slot.release()
                await self._download_all(spec, job.result, place)
                return JobState.DONE
            except _Finished:
                return JobState.FAILED
            except _Failure as failure:
                if not await self._settle(spec, job, failure):
                    return JobState.FAILED

    async def _settle(self, spec: JobSpec, job: Progress, failure: _Failure) -> bool:
        """Apply the table's action to a stage's failure; True when the job goes on (as a
        new request)."""
        error, action = failure.error, self.policy.action(failure.stage, failure.error)
        if error.error_type == "client_cancelled" and job.error_class == "Cancelled":
            # The user cancelled this request and now asks to retry it (--retry-failed
            # re-attached to it in case it finished anyway): it did not, so submit anew.
            action = Action.RESUBMIT
        if action is Action.STOP:
            raise error
        if action is Action.RESUBMIT:
            if job.attempts - job.ambiguous < self.options.max_submissions:
                await self.writer.apply(Transitions.resubmit(spec.key, ErrorInfo.of(error)))
                job.request, job.result = None, None
                job.last_error = f"{type(error).__name__}: {error}"
                self.summary.resubmitted += 1
                reason = "result expired" if isinstance(error, ResultExpired) else str(error)
                self.observer.on_note(
                    f"{spec.key[:12]}: {reason}; resubmitting (a new request, paid again)"
                )
                self.observer.on_state(spec, JobState.PENDING, f"resubmitting after {error}")
                return True
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
        await self.writer.apply(Transitions.failed(spec.key, ErrorInfo.of(error)))
        self.observer.on_state(spec, JobState.FAILED, str(error))
        return False

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
        found = _parent_output(self.outputs, ref)
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
        self.controls.check()
        cost = spec.estimated_cost or 0.0
        self.controls.reserve(cost)
        self.observer.on_state(spec, JobState.SUBMITTING, None)
        attempt = job.attempts + 1
        # From the intent to the recorded answer the outcome is unknowable after a crash;
        # shield it so a cancel (second Ctrl-C) never widens that window.
        with anyio.CancelScope(shield=True):
            await self.writer.apply(Transitions.intent(spec.key, attempt, spec.estimated_cost))
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
            events = self.client.stream_status(sub.status_url, idle=self.options.stream_idle)
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
            status = await self._stage("status", lambda: self.client.status(sub.status_url))
            made += 1
            await self._note_status(spec, job, status)
            if status.state == "COMPLETED":
                return status
            await anyio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(self.options.poll_max, delay * 1.5)
        return None

    async def _note_status(self, spec: JobSpec, job: Progress, status: Status) -> None:
        if status.state == "IN_PROGRESS" and job.state is not JobState.RUNNING:
            await self.writer.apply(Transitions.running(spec.key))
            job.state = JobState.RUNNING
            self.observer.on_state(spec, JobState.RUNNING, None)
        elif status.state == "IN_QUEUE" and job.state is JobState.RUNNING:
            await self.writer.apply(Transitions.queued_again(spec.key))
            job.state = JobState.QUEUED
            self.observer.on_state(spec, JobState.QUEUED, "back in fal's queue")

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
                outputs.append(OutputFile(str(rel), got.sha256, got.size, file["url"], field_path))
        crashpoints.reached("after_rename")
        await self.writer.apply(Transitions.done(spec.key, outputs))
        crashpoints.reached("after_done")
        self.observer.on_state(spec, JobState.DONE, None)
        self.record_outputs(spec.key, outputs)

    def record_outputs(self, key: str, outputs: list[OutputFile]) -> None:
        """Keep a done job's outputs for its children's inputs."""
        self.outputs[key] = outputs


def _parent_output(outputs: Mapping[str, list[OutputFile]], ref: str) -> OutputFile:
    """The output a ``@job:`` placeholder names (the first file, or the one at its field)."""
    parsed = split_parent_ref(ref)
    assert parsed is not None
    key, field_path = parsed
    files = outputs.get(key)
    if not files:
        raise PermanentError(f"the output of job {key[:12]} is not available")
    if field_path is None:
        return files[0]
    for found in files:
        if found.field == field_path:
            return found
    raise PermanentError(f"job {key[:12]} has no output {field_path!r}")


def local_inputs(
    outputs: Mapping[str, list[OutputFile]],
    sink_path: Callable[[str], Path],
    arguments: Mapping[str, Any],
) -> Any:
    """``arguments`` with each ``@job:`` placeholder as the local path of that output."""

    def replace(text: str) -> str:
        if split_parent_ref(text) is None:
            return text
        return str(sink_path(_parent_output(outputs, text).path))

    return substitute(arguments, replace)
