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
from .errors import FatalError, ManifestError
from .plan import Plan, cached_plan, check_default_output_dir, remember
from .state import DirectoryLock, JobState, Spend, StateStore, StateWriter, Transitions

if TYPE_CHECKING:
    from .endpoints import Overrides
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
    --prices file's rows); ManifestError names every problem with file, line and field."""
    return cached_plan(
        manifest,
        output_dir=output_dir,
        only=only,
        exclude=exclude,
        probe_remote=probe_remote,
        overrides=overrides,
    )


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
    ``local_steps`` are the steps local jobs run (default: the ones raybatch ships,
    ``pipeline.STEPS``: cut, frame, stitch).
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
    from .pipeline import STEPS, Scheduler
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
                    local_steps=STEPS if local_steps is None else local_steps,
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
