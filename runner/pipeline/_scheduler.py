"""The scheduler: runs a plan's job graph to completion, resumably.

Shape (anyio structured concurrency, after aiometer's "wait for capacity, then spawn"):

* one task group; a feeder per kind of job (remote requests, local steps) starts a task
  only once a place is free: at most ``concurrency + queue_buffer`` requests exist at
  fal, at most ``local_workers`` local steps run, and only as many job tasks exist here;
  a 100k-job batch never has 100k coroutines;
* jobs already holding a request (or a fetched result) go first: they cost nothing more,
  and re-attaching early keeps their results from expiring at fal;
* a job whose parents are not all done waits, holding nothing; when the last parent is
  done it joins the ready queue, where the longest remaining chain goes first (see
  ``_graph.py``); when a parent fails, everything below it fails as blocked by it;
* a slot is held from submit until the result is fetched; a fetched result then waits
  for a download in a queue as deep as the slots and gives its slot up once it has a
  place, so downloads that fall behind slow submission instead of piling up;
* every transition is committed through the single writer before the engine acts on it;
* a job gated by a verdict (``gate: looks``) waits, holding nothing, until a person
  approves its gating parent; the run follows verdicts given meanwhile (``_verdicts``) and,
  when nothing else is left, ends saying what waits, or waits for verdicts if asked.

What happens on a failure is decided in one place, the fault-policy table (``_policy``).
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any

import anyio
import anyio.abc
import httpx

from .. import crashpoints
from ..errors import FatalError, LocalStepFailed, RaybatchError
from ..fal import FalClient
from ..job import JobSpec
from ..net import tls_context
from ..outputs import OutputSink
from ..plan import JobList
from ..state import (
    PENDING_ROW,
    ErrorInfo,
    JobState,
    OutputFile,
    StateWriter,
    Transitions,
    Unfinished,
)
from ._cancel import NOTES, CancelOutcome, cancel_requests, outcome
from ._following import FollowsVerdicts
from ._gates import Gates
from ._graph import Graph
from ._inputs import local_inputs
from ._local import LocalJob, LocalStep, run_step
from ._options import Controls, NullObserver, RunObserver, RunOptions, RunSummary, Stopped
from ._policy import Policy
from ._remote import Hold, Progress, Remote
from ._reopening import Recheck, Reopens
from ._reserve import Relay, Reservations
from ._steps import STEPS
from ._verdicts import VerdictWatch, held_cost

_ATTACHED = (JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED)


class Scheduler(FollowsVerdicts, Reopens):
    """Runs a set of jobs to completion against fal, recording everything in the state."""

    def __init__(
        self,
        jobs: Sequence[JobSpec],
        writer: StateWriter,
        client: FalClient,
        sink: OutputSink,
        options: RunOptions | None = None,
        observer: RunObserver | None = None,
        *,
        local_steps: Mapping[str, LocalStep] | None = None,
        downloader: httpx.AsyncClient | None = None,
        ssl_context: ssl.SSLContext | None = None,
        extend: Callable[[], Awaitable[Sequence[JobSpec]]] | None = None,
        recheck: Recheck | None = None,
    ) -> None:
        self.jobs = JobList.of(jobs)
        #: Gives the jobs a reroll added meanwhile (already in the state), to run too.
        self._extend = extend
        #: Checks the done outputs no job reads, beside the first submissions.
        self._late_check = recheck
        self.writer = writer
        self.client = client
        self.sink = sink
        self.options = options or RunOptions()
        self.observer: RunObserver = observer or NullObserver()
        self.local_steps = dict(STEPS if local_steps is None else local_steps)
        self._downloader = downloader
        self._ssl = ssl_context
        self.summary = RunSummary()
        self.controls = Controls(self.options, self.observer, self.summary)
        self.gates = Gates(
            outage_limit=self.options.max_outage,
            status_per_second=self.options.status_per_second,
            on_note=self.observer.on_note,
            trip_after=self.options.outage_after,
            probe_initial=self.options.outage_probe,
        )
        self.policy = Policy(
            self.gates,
            self.options.limits,
            on_ambiguous=self.options.on_ambiguous,
            resubmit_expired=self.options.resubmit_expired,
        )
        self._slots = anyio.Semaphore(self.options.slots)
        self._download_queue = anyio.Semaphore(self.options.slots)
        self._local_limit = anyio.Semaphore(self.options.local_workers)
        self._outputs: dict[str, list[OutputFile]] = {}
        self._blocked: set[str] = set()  # keys stored as blocked
        self._running = 0
        self._changed = anyio.Event()
        self._jobs_scope: anyio.CancelScope | None = None
        self._progress: dict[str, Progress] = {}
        self._rows: dict[str, Unfinished] = {}  # as the run found them
        self._active: dict[str, Progress] = {}  # remote jobs a task is running
        self._remote: Remote | None = None
        self.graph: Graph | None = None
        self._verdicts: VerdictWatch | None = None
        self._fed = 0  # feeders that returned
        self._judged_at: float | None = None  # when nothing was left to judge
        self._feeding_done = anyio.Event()
        self._reservations = Reservations(Graph(JobList.of([]), {}), self._slots)
        self._group: anyio.abc.TaskGroup | None = None

    # -- control ---------------------------------------------------------------------------

    def drain(self) -> None:
        """First signal: start nothing new; let jobs at fal finish within the grace.

        Must be called from the event loop's thread (the signal task is).
        """
        self.summary.interrupted = True
        self.controls.stop(
            f"interrupted: submitting nothing new; waiting up to {self.options.grace:g}s for"
            " in-flight jobs (press Ctrl-C again to leave them running at fal)"
        )
        if self._jobs_scope is not None:
            self._jobs_scope.deadline = min(
                self._jobs_scope.deadline, anyio.current_time() + self.options.grace
            )
        self._poke()

    def abort(self) -> None:
        """Second signal: stop at once; in-flight requests stay re-attachable."""
        self.summary.interrupted = True
        if self._jobs_scope is not None:
            self._jobs_scope.cancel()

    async def cancel(self, keys: Iterable[str]) -> list[CancelOutcome]:
        """``raybatch cancel`` while this run goes on (asked through the mailbox): jobs no
        task has started are cancelled now; a running job's task ends it as fal reports,
        once fal is asked to cancel its request; this run's other unfinished jobs are
        cancelled as with no run. Must run on the event loop's thread."""
        graph, remote = self.graph, self._remote
        if graph is None or remote is None:
            return []
        wanted = set(keys)
        states = self.writer.store.states()
        outcomes: list[CancelOutcome] = []
        idle: list[int] = []
        for i, key in enumerate(self.jobs.keys):
            if key not in wanted:
                continue
            spec, job = self.jobs[i], self._active.get(key)
            if job is None:
                if states.get(key) in (JobState.PENDING, JobState.BLOCKED):
                    idle.append(i)
                    outcomes.append(outcome(key, spec.label, "unsubmitted", True))
                continue
            try:
                case = await remote.request_cancel(spec, job)
            except RaybatchError as exc:
                note = f"fal did not take the cancel: {exc}"
                outcomes.append(CancelOutcome(key, spec.label, note, False))
                continue
            outcomes.append(outcome(key, spec.label, case, False))
        if idle:
            # Out of the ready queue first: the feeder must not start one while we write.
            graph.discard(idle)
            idle_keys = [self.jobs.keys[i] for i in idle]
            await self.writer.apply(
                *(Transitions.cancelled(key, NOTES["unsubmitted"]) for key in idle_keys)
            )
            for i in idle:
                self.observer.on_state(self.jobs[i], JobState.CANCELLED, NOTES["unsubmitted"])
            for key in idle_keys:
                await self._fail_below(key, graph.failed(key))
        others = [key for key in wanted if graph.index(key) is None]
        outcomes += await cancel_requests(self.writer, others, self.client)
        self.observer.on_note(f"cancel asked by another raybatch process: {len(outcomes)} job(s)")
        self._poke()
        return outcomes

    def _fatal(self, exc: FatalError) -> None:
        self.summary.fatal = self.summary.fatal or exc
        self.controls.stop(f"stopping: {exc}")
        # Cancel the jobs, not the writer: transitions already underway still commit.
        if self._jobs_scope is not None:
            self._jobs_scope.cancel()

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> RunSummary:
        """Run every job not yet finished; returns how it went (never raises for a job)."""
        store = self.writer.store
        rows = self.jobs.own_keys(store.unfinished())
        has_parents = any(self.jobs.columns.parents)
        states = store.states() if has_parents else {}
        if any(self.jobs.columns.gates):
            self._verdicts = VerdictWatch(store.path)
        approved = self._verdicts.approved() if self._verdicts else set()
        keys = self.jobs.keys
        todo = [i for i, key in enumerate(keys) if key in rows]
        fifo = self.options.ready_order == "fifo"
        self.graph = Graph(self.jobs, states, approved, fifo=fifo, todo=todo)
        if self.graph.chained:  # no queue at fal: a chain's next link must not wait in it
            self._slots = anyio.Semaphore(self.options.concurrency)
        self._reservations = Reservations(self.graph, self._slots)
        if has_parents:
            self._load_parent_outputs(rows, states)
        own_client = self._downloader is None
        downloader = self._downloader or httpx.AsyncClient(
            timeout=httpx.Timeout(60.0, connect=10.0),
            follow_redirects=False,
            verify=self._ssl or tls_context(),
        )
        remote = self._remote = Remote(
            options=self.options,
            writer=self.writer,
            client=self.client,
            sink=self.sink,
            downloader=downloader,
            policy=self.policy,
            controls=self.controls,
            observer=self.observer,
            summary=self.summary,
            outputs=self._outputs,
            download_queue=self._download_queue,
        )
        try:
            with anyio.CancelScope() as jobs_scope:
                self._jobs_scope = jobs_scope
                async with anyio.create_task_group() as group:
                    try:
                        await self._start(group, remote, rows, states, todo)
                    except FatalError as exc:
                        self._fatal(exc)
            self._finish_summary()
        finally:
            if own_client:
                await downloader.aclose()
            if self._verdicts is not None:
                self._verdicts.close()
        return self.summary

    async def _start(
        self,
        group: anyio.abc.TaskGroup,
        remote: Remote,
        rows: dict[str, Unfinished],
        states: Mapping[str, JobState],
        todo: list[int],
    ) -> None:
        graph = self.graph
        assert graph is not None
        keys = self.jobs.keys
        ambiguous = [i for i in todo if rows[keys[i]].state is JobState.SUBMITTING]
        # A job's progress is made when its task starts (most of 100k jobs wait long).
        self._rows, self._progress = rows, {}
        if ambiguous:
            await self._settle_ambiguous(ambiguous)
        ready, unblock, orphaned = [], [], []
        for i in todo:
            key = keys[i]
            settled = self._progress.get(key)
            state = settled.state if settled else rows[key].state
            if state is JobState.BLOCKED:
                self._blocked.add(key)
            if state in _ATTACHED:
                job = self._job(key)
                holds_slot = job.result is None
                await (self._slots if holds_slot else self._download_queue).acquire()
                self._spawn(group, remote, i, job, holds_slot)
            elif i in graph.waiting:
                failed = [p for p in graph.waiting[i] if states.get(p) in _ENDED]
                if failed:
                    orphaned.append((i, failed[0]))
            elif i in graph.awaiting:
                if state is JobState.PENDING:  # let go before a verdict was taken back
                    await self._reblock([i])
            elif state in (JobState.PENDING, JobState.BLOCKED):
                ready.append(i)
                if state is JobState.BLOCKED:
                    unblock.append(key)
        if unblock:
            # Parents done before a crash let these go: let them go now.
            await self.writer.apply(*(Transitions.unblock(key) for key in unblock))
            self._blocked.difference_update(unblock)
        graph.add_ready(ready)
        for i, parent in orphaned:
            await self._fail_below(parent, graph.failed(parent) or [i])
        self._group, self._remote = group, remote
        group.start_soon(self._feed, group, remote, False)
        group.start_soon(self._feed, group, remote, True)
        if self._late_check is not None:  # after the feeders: the first submits go first
            self._start_recheck(group, remote, self._late_check)
        if self._verdicts is not None:
            group.start_soon(self._follow_verdicts, self._verdicts)

    async def _settle_ambiguous(self, ambiguous: list[int]) -> None:
        """Submits interrupted before fal's answer was recorded: counted as paid, then
        resubmitted or failed as the policy says."""
        keys = self.jobs.keys
        resubmit = self.options.on_ambiguous == "resubmit"
        await self.writer.apply(
            *(Transitions.ambiguous(keys[i], resubmit=resubmit) for i in ambiguous)
        )
        for i in ambiguous:
            job = self._progress[keys[i]] = Progress.of(self._rows[keys[i]])
            job.attempts += 1
            job.ambiguous += 1
            job.state = JobState.PENDING if resubmit else JobState.FAILED
            if not resubmit:
                self.observer.on_state(self.jobs[i], JobState.FAILED, "ambiguous submit")
        self.summary.ambiguous += len(ambiguous)
        self.observer.on_note(
            f"{len(ambiguous)} submit(s) were interrupted before fal's answer was recorded;"
            f" policy --on-ambiguous {self.options.on_ambiguous}"
        )

    # -- feeding -----------------------------------------------------------------------------

    async def _feed(self, group: anyio.abc.TaskGroup, remote: Remote, local: bool) -> None:
        """Start ready jobs of one kind as places free up, until nothing is left to start."""
        graph = self.graph
        assert graph is not None
        limit = self._local_limit if local else self._slots
        try:
            while self.controls.stop_reason is None:
                if not graph.has_ready(local):
                    idle = self._running == 0 and not graph.has_ready(not local)
                    if idle and not self._waits_for_verdicts():
                        return
                    await self._changed.wait()
                    continue
                await self._feed_one(group, remote, local, limit)
        finally:
            self._fed += 1
            if self._fed == 2:
                self._feeding_done.set()

    async def _feed_one(
        self, group: anyio.abc.TaskGroup, remote: Remote, local: bool, limit: anyio.Semaphore
    ) -> None:
        """Start the next ready job of one kind once a place is free."""
        graph = self.graph
        assert graph is not None
        await limit.acquire()
        if self.controls.stop_reason is not None or not graph.has_ready(local):
            limit.release()
            return
        i = graph.pop_ready(local)
        if local:
            self._running += 1
            group.start_soon(self._local_task, i)
        else:
            self._spawn(group, remote, i, self._job(self.jobs.keys[i]), True)

    def _job(self, key: str) -> Progress:
        """The progress of a job whose task starts: made from its row the first time."""
        job = self._progress.get(key)
        if job is None:
            job = self._progress[key] = Progress.of(self._rows.get(key, PENDING_ROW))
        return job

    def _spawn(
        self, group: anyio.abc.TaskGroup, remote: Remote, i: int, job: Progress, holds: bool
    ) -> None:
        self._running += 1
        self._active[self.jobs.keys[i]] = job
        group.start_soon(self._remote_task, remote, i, job, holds)

    async def _remote_task(self, remote: Remote, i: int, job: Progress, holds_slot: bool) -> None:
        """One remote job to its end; it starts holding a slot, or else a download place."""
        spec = self.jobs[i]

        def hand_over() -> bool:
            # Only a job whose result is in, in a run still starting work, passes it on.
            done = job.result is not None and self.controls.stop_reason is None
            return done and self._reservations.keep_for_heir(i)

        slot = Relay(self._slots, holds_slot, hand_over)
        place = Hold(self._download_queue, not holds_slot)
        try:
            final = await remote.run(spec, job, slot, place)
            await self._after(spec, final)
        except Stopped:
            self.observer.on_state(spec, JobState.PENDING, self.controls.stop_reason)
        except FatalError as exc:
            self._fatal(exc)
        finally:
            # Its task never starts again in this run: what it knew (a result, fal's logs)
            # is not kept for the rest of a 100k-job run.
            self._active.pop(spec.key, None)
            self._progress.pop(spec.key, None)
            slot.release()
            place.release()
            self._running -= 1
            self._poke()

    async def _local_task(self, i: int) -> None:
        """One local step to its end (it holds a local place)."""
        spec = self.jobs[i]
        try:
            await self._local(spec)
            await self._after(spec, JobState.DONE)
        except FatalError as exc:
            self._fatal(exc)
        except RaybatchError as exc:  # the table's action for every other local failure
            await self.writer.apply(Transitions.failed(spec.key, ErrorInfo.of(exc)))
            self.observer.on_state(spec, JobState.FAILED, str(exc))
            await self._after(spec, JobState.FAILED)
        finally:
            self._local_limit.release()
            self._running -= 1
            self._poke()

    async def _local(self, spec: JobSpec) -> None:
        step = self.local_steps.get(spec.endpoint)
        if step is None:
            raise LocalStepFailed(f"raybatch has no local step {spec.endpoint!r}")
        arguments = local_inputs(self._outputs, self.sink.path, spec.arguments)
        self.observer.on_state(spec, JobState.PREPARING, None)

        def produce(part: Any) -> None:
            run_step(step, LocalJob(spec, arguments, part))

        # Abandoned on cancel: a second Ctrl-C must not wait for a long stitch; the part it
        # leaves is deleted by the next run before it does the step again.
        got = await anyio.to_thread.run_sync(
            functools.partial(self.sink.write, PurePosixPath(spec.output), produce),
            abandon_on_cancel=True,
        )
        stamp = self.sink.stamp(spec.output)
        outputs = [OutputFile(spec.output, got.sha256, got.size, "", "file", stamp)]
        crashpoints.reached("after_step")
        await self.writer.apply(Transitions.done(spec.key, outputs))
        self._outputs[spec.key] = outputs
        self.observer.on_state(spec, JobState.DONE, None)

    async def _after(self, spec: JobSpec, final: JobState) -> None:
        """A job ended: its children may start, or fail with it."""
        graph = self.graph
        assert graph is not None
        if final is JobState.DONE:
            ready = graph.done(spec.key)
            keys = [self.jobs.keys[i] for i in ready if self.jobs.keys[i] in self._blocked]
            if keys:
                await self.writer.apply(*(Transitions.unblock(key) for key in keys))
                self._blocked.difference_update(keys)
            for i in [i for i in ready if self._reservations.take(i)]:
                ready.remove(i)  # its place at fal was kept for it: it starts now
                if self.controls.stop_reason is None and self._group is not None:
                    assert self._remote is not None
                    self._spawn(self._group, self._remote, i, self._job(self.jobs.keys[i]), True)
                else:
                    self._slots.release()
                    graph.add_ready([i])
            graph.add_ready(ready)
        else:
            await self._fail_below(spec.key, graph.failed(spec.key))
        self._poke()

    async def _fail_below(self, parent: str, below: list[int]) -> None:
        if not below:
            return
        i = self.graph.index(parent) if self.graph is not None else None
        label = self.jobs[i].label if i is not None else parent[:12]
        keys = [self.jobs.keys[j] for j in below]
        self._reservations.give_back(below)
        await self.writer.apply(*(Transitions.blocked_by(key, label) for key in keys))
        self._blocked.difference_update(keys)
        for j in below:
            self.observer.on_state(self.jobs[j], JobState.FAILED, f"blocked by {label}")

    def _finish_summary(self) -> None:
        states = self.writer.store.states()
        for key in self.jobs.keys:
            state = states.get(key)
            if state is JobState.DONE:
                self.summary.done += 1
            elif state is JobState.FAILED:
                self.summary.failed += 1
            elif state is JobState.CANCELLED:
                self.summary.cancelled += 1
            else:
                self.summary.not_started += 1
        if self._verdicts is not None and self.graph is not None:
            # Held for a person, not left undone: they are counted apart.
            to_judge, held = self._verdicts.split(self.graph)
            keys = self.jobs.keys
            to_judge = [i for i in to_judge if states.get(keys[i]) is JobState.BLOCKED]
            held = [i for i in held if states.get(keys[i]) is JobState.BLOCKED]
            costs = self.jobs.columns.costs
            self.summary.awaiting_verdict = len(to_judge)
            self.summary.awaiting_cost = held_cost(to_judge, costs)
            self.summary.held_by_rejection = len(held)
            self.summary.held_cost = held_cost(held, costs)
            self.summary.not_started -= len(to_judge) + len(held)


_ENDED = (JobState.FAILED, JobState.CANCELLED)
