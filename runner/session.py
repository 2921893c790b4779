"""One command on one manifest, from set-up to tear-down: ``plan``, ``run``, ``status``,
``report`` and ``cancel`` as functions that return values and raise the documented error
tree (``runner.errors``), never printing and never exiting. The CLI prints what they
return; the Python API is these functions.

A run's set-up: the plan (remembered when nothing it was made from changed), the output
directory (refusing a default one that another directory's state already claims), the
budget check, the directory lock, the state file (migrated if older), the single writer,
the plan added to the state unless it is the very plan last added, and ``--retry-failed``
resets decided by the fault-policy table. Its tear-down: ``results.jsonl`` and the review
page, rewritten for the whole plan whatever the selection.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from . import crashpoints
from .errors import FatalError, ManifestError, StateError
from .plan import Plan, cached_plan, check_default_output_dir, remember
from .state import DirectoryLock, JobState, Spend, StateStore, StateWriter, Transitions

if TYPE_CHECKING:
    from .endpoints import Overrides
    from .export import Choice, ExportResult
    from .fal import FalConfig
    from .pipeline import CancelOutcome, LocalStep, RunObserver, RunOptions, RunSummary

# Each function imports what it uses when it runs: ``status`` on a remembered plan needs
# neither pydantic, PyAV, httpx nor the emulator, and their imports cost most of a second.

#: Remote requests at once when neither the manifest nor the caller says: a small
#: account's limit. fal queues what is beyond the real limit, so this only sets the pace.
DEFAULT_CONCURRENCY = 8
#: Posters the review page refresh at the end of a run may extract (see report/_review).
RUN_POSTERS = 200
#: The key ``--local`` uses when FAL_KEY is unset: the emulator accepts any key.
LOCAL_KEY = "local-emulator-key"


def load(
    manifest: Path,
    *,
    output_dir: Path | None = None,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    probe_remote: bool = False,
    overrides: Overrides | None = None,
) -> Plan:
    """The manifest's plan (the selection ``only``/``exclude`` applied, ``overrides`` a
    --prices file's rows), with the takes rerolls added (recorded in its state file);
    ManifestError names every problem with file, line and field."""
    whole = cached_plan(
        manifest, output_dir=output_dir, probe_remote=probe_remote, overrides=overrides
    )
    extra = _extra_takes(whole)
    if extra:
        whole = cached_plan(
            manifest,
            output_dir=output_dir,
            probe_remote=probe_remote,
            overrides=overrides,
            extra_takes=extra,
        )
    return whole.selected(only, exclude)


def _extra_takes(plan: Plan) -> dict[str, int]:
    """Take group → highest take, for the rerolls the plan's state file records."""
    with reading(plan) as store:
        return store.extra_takes() if store is not None else {}


@contextmanager
def reading(plan: Plan) -> Iterator[StateStore | None]:
    """The plan's state file opened read-only, or None when nothing has run there yet."""
    store = StateStore.open_readonly(plan.output_dir / "state.db")
    try:
        yield store
    finally:
        if store is not None:
            store.close()


def plan_summary(plan: Plan) -> dict[str, Any]:
    """What ``plan`` shows: jobs and cost per endpoint, what is paid, the limits applied."""
    from .report import plan_summary as summarize

    with reading(plan) as store:
        return summarize(plan, store)


def status(
    plan: Plan,
    *,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    output_dir: Path | None = None,
) -> dict[str, Any]:
    """What ``status`` shows: jobs per endpoint and state, failures by reason, spend."""
    from .report import status_summary

    with reading(plan) as store:
        return status_summary(plan, store, only=only, exclude=exclude, output_dir=output_dir)


def report(plan: Plan) -> Path:
    """Write the review page; returns its path."""
    from .report import write_review_page

    return write_review_page(plan)


@dataclass
class RunResult:
    """How a run ended: the engine's summary and what the state says was spent."""

    summary: RunSummary
    spend: Spend
    spend_before: Spend
    warnings: list[str] = field(default_factory=list)


#: What the CLI gives a run to draw progress: called with the plan and a read-only view
#: of the state once it is open; its context is entered for the run.
ObserverFactory = Callable[[Plan, StateStore], AbstractContextManager["RunObserver"]]


def run(
    plan: Plan,
    options: RunOptions,
    *,
    fal: AbstractContextManager[FalConfig],
    retry_failed: bool = False,
    observe: ObserverFactory | None = None,
    handle_signals: bool = False,
    http_timeout: float = 30.0,
    local_steps: dict[str, LocalStep] | None = None,
) -> RunResult:
    """Run every job of ``plan`` not yet done; resumes where an earlier run stopped.

    ``fal`` yields the fal configuration for the run (see :func:`fal_origin`).
    ``handle_signals`` installs the Ctrl-C policy (first drains, second leaves requests
    to the next run); only the main thread may. Refusals (a budget below the estimate,
    another run on the directory) come before anything is written or submitted.
    """
    from .report import remaining_cost, unpriced_remaining

    if options.concurrency < 1:
        raise ManifestError("usage: --concurrency must be at least 1")
    output_dir = plan.output_dir
    if plan.facts.output_dir is None and not plan.output_dir_given:
        check_default_output_dir(plan.manifest_path, output_dir)
    with reading(plan) as existing:
        remaining = remaining_cost(plan, existing, retry_failed=retry_failed)
        unpriced = unpriced_remaining(plan, existing, retry_failed=retry_failed)
    if options.max_cost is not None and unpriced:
        from .endpoints import unpriced_refusal

        raise ManifestError(unpriced_refusal(unpriced))
    if options.max_cost is not None and remaining > options.max_cost + 1e-9:
        raise ManifestError(
            f"the remaining jobs are estimated at ${remaining:.2f}, above --max-cost"
            f" ${options.max_cost:.2f}; nothing was submitted (raise the cap or use --only)"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    crashpoints.arm(os.environ.get("RAYBATCH_CRASH_AT"))
    with DirectoryLock(output_dir):
        store = StateStore.open(output_dir / "state.db")
        remember(plan.manifest_path, output_dir)
        reader = StateStore.open_readonly(store.path)
        assert reader is not None
        try:
            with fal as config:
                result = anyio.run(
                    functools.partial(
                        _run,
                        plan,
                        store,
                        reader,
                        config,
                        options,
                        retry_failed=retry_failed,
                        observe=observe,
                        handle_signals=handle_signals,
                        http_timeout=http_timeout,
                        local_steps=local_steps,
                    )
                )
            _write_results(plan, store, result.summary)
        finally:
            reader.close()
            store.close()
    result.warnings += _refresh_review(plan)
    return result


async def _run(
    plan: Plan,
    store: StateStore,
    reader: StateStore,
    config: FalConfig,
    options: RunOptions,
    *,
    retry_failed: bool,
    observe: ObserverFactory | None,
    handle_signals: bool,
    http_timeout: float,
    local_steps: dict[str, LocalStep] | None,
) -> RunResult:
    from .fal import FalClient
    from .net import tls_context
    from .outputs import LocalSink
    from .pipeline import Scheduler
    from .state import open_writer

    # One TLS context for every client of the run: each costs a load of the CA bundle.
    context = tls_context()
    spend_before = store.spend()
    async with open_writer(store) as writer:
        if not store.is_last_plan(plan.identity):
            await writer.apply(Transitions.add_plan(plan.jobs, plan.identity))
        if retry_failed:
            await _reset_failed(writer, plan)
        # The observer reads the state as it is now, resets included.
        observing = observe(plan, reader) if observe else nullcontext(None)
        with observing as observer:
            async with FalClient(config, timeout=http_timeout, ssl_context=context) as client:
                scheduler = Scheduler(
                    plan.jobs,
                    writer,
                    client,
                    LocalSink(plan.output_dir, ssl_context=context),
                    options,
                    observer,
                    local_steps=local_steps,
                    ssl_context=context,
                )
                if handle_signals:
                    async with anyio.create_task_group() as group:
                        # start(): the handlers are in place before the first submit.
                        await group.start(_signals, scheduler)
                        summary = await scheduler.run()
                        group.cancel_scope.cancel()
                else:
                    summary = await scheduler.run()
            spend = store.spend()
            if observer is not None:
                observer.on_finish(summary, spend, spend_before)
    return RunResult(summary, spend, spend_before)


async def _reset_failed(writer: StateWriter, plan: Plan) -> None:
    """Failed and cancelled jobs of the plan go back where the fault-policy table says."""
    from .pipeline import retry_state

    keys = set(plan.keys)
    rows = [
        row
        for row in writer.store.rows_in((JobState.FAILED, JobState.CANCELLED))
        if row.key in keys
    ]
    if not rows:
        return
    # Results are needed to tell "download again" from the rest: read them for these only.
    full = {row.key: row for row in writer.store.rows([r.key for r in rows])}
    await writer.apply(*(Transitions.reset(key, retry_state(full[key])) for key in full))


async def _signals(
    scheduler: Any, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """First SIGINT/SIGTERM drains; the second leaves in-flight requests to a later run."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        task_status.started()
        count = 0
        async for _ in received:
            count += 1
            if count == 1:
                scheduler.drain()
            else:
                scheduler.abort()


def _write_results(plan: Plan, store: StateStore, summary: RunSummary) -> None:
    from .report import write_results

    try:
        write_results(store, plan.output_dir / "results.jsonl", plan.keys)
    except FatalError:
        if summary.fatal is None:
            raise
        # The run already stopped on a fatal error (a full disk, most likely): that one is
        # the message and the exit code; this one is a consequence.


def _refresh_review(plan: Plan) -> list[str]:
    from .report import write_review_page

    try:
        # Bounded: at the end of a 100k-job run, a poster per new video would take an hour
        # of decoding; ``raybatch report`` makes the rest.
        write_review_page(plan, posters=RUN_POSTERS)
    except Exception as exc:
        return [f"could not refresh the review page: {exc}"]
    return []


@contextmanager
def fal_origin(
    *,
    local: bool = False,
    fal_url: str | None = None,
    backup_url: str | None = None,
    state_dir: Path | None = None,
) -> Iterator[FalConfig]:
    """The fal configuration for a run: real fal (FAL_KEY from the environment), the
    emulator at ``fal_url``, or with ``local`` a built-in emulator for the run, keeping
    its requests in ``state_dir`` so the next ``--local`` run re-attaches to them."""
    from .fal import FalConfig

    if not local:
        yield FalConfig.from_env(fal_url, backup_url)
        return
    from .emulator import launch

    with launch.local_emulator(state_dir=state_dir) as url:
        key = os.environ.get("FAL_KEY") or LOCAL_KEY
        yield FalConfig.single_origin(url, key)


def cancel(plan: Plan, config: FalConfig) -> list[CancelOutcome] | None:
    """Cancel the plan's requests at fal and mark them cancelled; None when nothing ran."""
    path = plan.output_dir / "state.db"
    if not path.exists():
        return None
    with DirectoryLock(plan.output_dir):
        store = StateStore.open(path)
        try:
            return anyio.run(_cancel, store, plan, config)
        finally:
            store.close()


async def _cancel(store: StateStore, plan: Plan, config: FalConfig) -> list[CancelOutcome]:
    from .fal import FalClient
    from .pipeline import cancel_requests
    from .state import open_writer

    async with open_writer(store) as writer, FalClient(config) as client:
        return await cancel_requests(writer, plan.keys, client)


def judge(plan: Plan, keys: Sequence[str], verdict: str | None, *, note: str | None = None) -> None:
    """Approve, reject or clear (``verdict`` None) the done jobs ``keys``, and leave
    ``note`` on them, through a writer beside any run (a run waiting for verdicts sees
    them at its next poll). IllegalTransition names a job that is not done."""
    from .state import Verdicts, open_writer

    store = _beside_runs(plan)

    async def write() -> None:
        async with open_writer(store) as writer:
            for key in keys:
                if verdict is not None or note is None:
                    await writer.apply(Verdicts.judge(key, verdict, "cli"))
                if note is not None:
                    await writer.apply(Verdicts.note(key, note, "cli"))

    try:
        anyio.run(write)
    finally:
        store.close()


def _beside_runs(plan: Plan) -> StateStore:
    """The plan's state opened for a person's writes (no lock); StateError if none yet."""
    store = StateStore.open_beside_runs(plan.output_dir / "state.db")
    if store is None:
        raise StateError(f"nothing has run in {plan.output_dir} yet: there is nothing to judge")
    return store


def show(plan: Plan, which: str) -> dict[str, Any]:
    """One job's whole story (``which``: a key prefix or a label); ManifestError when it
    names no job, or several."""
    from .report import find_job, job_story

    with reading(plan) as store:
        return job_story(plan, store, find_job(plan, store, which))


def export(plan: Plan, folder: Path, *, choose: Choice = "approved") -> ExportResult:
    """Deliver the plan's approved (or all done) takes into ``folder``, with a delivery
    list and a timeline; ManifestError on a name taken by other bytes (nothing written)."""
    from .export import export as deliver

    with reading(plan) as store:
        return deliver(plan, store, folder, choose=choose)


@dataclass
class Reroll:
    """A take rolled again: the rejected job, and the take that replaces it."""

    label: str
    key: str
    take: int


@dataclass
class Rerolled:
    """What ``reroll`` did: the takes rolled again, and the new jobs the next run makes."""

    takes: list[Reroll]
    plan: Plan
    new_jobs: int
    new_cost: float


def reroll(plan: Plan) -> Rerolled:
    """One more take for each rejected look (or ungated output) of ``plan`` not rolled
    again yet; the next ``run`` renders it. Asking twice adds nothing."""
    from .errors import IllegalTransition
    from .report import reroll_ops
    from .state import open_writer

    given = plan.output_dir if plan.output_dir_given else None
    whole = load(plan.manifest_path, output_dir=given)
    with reading(plan) as store:
        if store is None:
            return Rerolled([], plan, 0, 0.0)
        ops = reroll_ops(whole, list(plan.jobs), store.judgements(), _rolled(store))
    if not ops:
        return Rerolled([], plan, 0, 0.0)
    writable = _beside_runs(plan)

    async def write() -> None:
        async with open_writer(writable) as writer:
            for _spec, op in ops:
                try:
                    await writer.apply(op)
                except IllegalTransition:
                    continue  # rolled again meanwhile, from a page

    try:
        anyio.run(write)
        rolled = {r["from_key"]: int(r["take"]) for r in writable.rerolls()}
    finally:
        writable.close()
    after = load(plan.manifest_path, output_dir=given)
    new = [spec for spec in after.jobs if spec.key not in set(whole.keys)]
    takes = [Reroll(s.label, s.key, rolled[s.key]) for s, _op in ops if s.key in rolled]
    return Rerolled(takes, after, len(new), round(sum(s.estimated_cost or 0.0 for s in new), 6))


def _rolled(store: StateStore) -> set[str]:
    return {r["from_key"] for r in store.rerolls()}


def review(
    plan: Plan,
    *,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    port: int = 0,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the review page on 127.0.0.1 until interrupted; ``on_ready`` gets the URL
    to open (it carries the session's token). ``only``/``exclude`` select what it shows."""
    from .report import ReviewSession, serve_review

    given = plan.output_dir if plan.output_dir_given else None

    def reload() -> tuple[Plan, Plan]:
        whole = load(plan.manifest_path, output_dir=given)
        return whole, whole.selected(only, exclude)

    whole, shown = reload()
    serve_review(ReviewSession(shown, whole, reload), port=port, on_ready=on_ready)
