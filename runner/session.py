"""One command on one manifest, from set-up to tear-down: ``plan``, ``run``, ``status``,
``report``, ``cancel`` and ``verify`` as functions that return values and raise the
documented error tree (``runner.errors``), never printing and never exiting. The CLI
prints what they return; the Python API is these functions. ``locate`` finds a batch's
state for the commands that only read or keep it up (``_locate``); ``cancel`` and
``verify`` live in ``_upkeep``.

A run's set-up: the plan (remembered when nothing it was made from changed), the output
directory (refusing a default one that another directory's state already claims), the
budget check, the directory lock, the state file (migrated if older), the single writer,
the plan added to the state unless it is the very plan last added, the files of the jobs
it superseded moved aside, ``--retry-failed`` resets decided by the fault-policy table,
and a stat of every done output (missing or altered ones are fetched again, or rendered
again with ``--rerender``). While it runs it answers ``raybatch cancel`` from other
processes (``state.Mailbox``). Its tear-down: ``results.jsonl`` and the review
page, rewritten for the whole plan whatever the selection.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from . import crashpoints

# The judging and delivery commands, and those that read or keep up a batch without
# running it, live beside this module (for its size), and are its.
from ._judge import (
    Reroll as Reroll,
    Rerolled as Rerolled,
    export as export,
    judge as judge,
    reroll as reroll,
    rerolled_jobs,
    review as review,
    show as show,
)
from ._locate import Located as Located, extra_takes, locate as locate
from ._upkeep import (
    Cancelled as Cancelled,
    Verified as Verified,
    cancel as cancel,
    read_by_others,
    recheck_outputs,
    rerender_cost,
    verify as verify,
)
from .errors import FatalError, ManifestError
from .plan import ClipFacts, Plan, cached_plan, check_default_output_dir, remember
from .state import DirectoryLock, JobState, Spend, StateStore, StateWriter, Transitions

if TYPE_CHECKING:
    from .endpoints import Overrides
    from .fal import FalConfig
    from .pipeline import LocalStep, RunObserver, RunOptions, RunSummary
    from .report import OutputNames

# Each function imports what it uses when it runs: ``status`` on a remembered plan needs
# neither pydantic, PyAV, httpx nor the emulator, and their imports cost most of a second.

#: Remote requests at once when neither the manifest nor the caller says: a small
#: account's limit. fal queues what is beyond the real limit, so this only sets the pace.
DEFAULT_CONCURRENCY = 8
#: USD above which ``run`` on a terminal asks before starting (manifest ``confirm_above:``,
#: ``--confirm-above``); without a max_cost it always asks.
CONFIRM_ABOVE = 20.0
#: Posters the review page refresh at the end of a run may extract (see report/_review).
RUN_POSTERS = 200
#: Proxies of unplayable sources it may make (each transcodes a whole clip; `report`
#: makes the rest).
RUN_PROXIES = 4
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
    skip_bad: bool = False,
) -> Plan:
    """The manifest's plan (the selection ``only``/``exclude`` applied, ``overrides`` a
    --prices file's rows), with the takes rerolls added (recorded in its state file);
    ManifestError names every problem with file, line and field. Sources that cannot be
    used are left out and listed in ``Plan.skipped``: ``plan`` and ``run`` refuse them
    unless ``skip_bad`` (see ``Plan.bad_source_error``)."""
    options: dict[str, Any] = {
        "output_dir": output_dir,
        "probe_remote": probe_remote,
        "overrides": overrides,
        "skip_bad": skip_bad,
    }
    whole = cached_plan(manifest, **options)
    extra = extra_takes(whole.output_dir)
    if extra:
        whole = cached_plan(manifest, extra_takes=extra, **options)
    return whole.selected(only, exclude)


@contextmanager
def reading(plan: Plan) -> Iterator[StateStore | None]:
    """The plan's state file opened read-only, or None when nothing has run there yet."""
    store = StateStore.open_readonly(plan.output_dir / "state.db")
    try:
        yield store
    finally:
        if store is not None:
            store.close()


def plan_summary(
    plan: Plan,
    *,
    skip_bad: bool = False,
    clips: Sequence[ClipFacts] | None = None,
    jobs: bool = True,
) -> dict[str, Any]:
    """What ``plan`` shows: jobs and cost per endpoint, what is paid, the limits applied,
    the sources left out, each job (``jobs``), and ``clips`` (see :func:`clip_facts`) when
    given; raises the bad-source error unless ``skip_bad``."""
    from .report import clips_summary, plan_summary as summarize

    refuse_bad_sources(plan, skip_bad)
    with reading(plan) as store:
        summary = summarize(plan, store, jobs=jobs)
    if clips is not None:
        summary["clips"] = clips_summary(clips)
    return summary


def clip_facts(plan: Plan, *, decode: bool = True) -> list[ClipFacts]:
    """Each source's facts, renders and warnings (``plan --clips``); with ``decode`` the
    end of each local clip is decoded too, to find truncated files."""
    if not decode:
        return list(plan.clips)
    from .manifest import with_decode_checks

    return with_decode_checks(list(plan.clips), plan.manifest_path.parent)


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


def located_status(
    located: Located,
    *,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    output_dir: Path | None = None,
) -> dict[str, Any]:
    """:func:`status` of a plan :func:`locate` found, its notes under ``"warnings"``; a
    state found elsewhere is named in the retry command (``run`` from here would refuse)."""
    if located.relocated and output_dir is None:
        output_dir = located.plan.output_dir
    summary = status(located.plan, only=only, exclude=exclude, output_dir=output_dir)
    summary["warnings"] = located.warnings
    return summary


def report(plan: Plan) -> Path:
    """Write the review page of the whole plan (whatever the selection); returns its path."""
    from .report import write_review_page

    return write_review_page(plan.whole, target=names(plan).page)


def names(plan: Plan) -> OutputNames:
    """Where the plan's results.jsonl and review page go (per manifest in a shared dir)."""
    from .report import output_names

    with reading(plan) as store:
        return output_names(plan, store.manifests() if store is not None else {})


def refuse_bad_sources(plan: Plan, skip_bad: bool) -> None:
    """Raise the ManifestError listing the sources left out, unless they are skipped."""
    error = plan.bad_source_error(skip_bad)
    if error is not None:
        raise error


@dataclass(frozen=True)
class Estimate:
    """What a run would submit now: jobs, their estimated USD, and those without a price
    (counted per endpoint)."""

    jobs: int
    usd: float
    unpriced: dict[str, int]

    def question(self, threshold: float, max_cost: float | None) -> str | None:
        """What to tell before asking whether to start (None: nothing to ask): the jobs
        and their estimate above ``threshold``, with unpriced jobs, or with no ``max_cost``
        to cap the spend."""
        if self.jobs == 0:
            return None
        above = self.usd > threshold + 1e-9
        if not above and max_cost is not None and not self.unpriced:
            return None
        unpriced = sum(self.unpriced.values())
        words = [f"{self.jobs} job(s) to submit, estimated at ${self.usd:.2f}"]
        if unpriced:
            words.append(f" + {unpriced} without a price")
        if above:
            words.append(f" (above ${threshold:.2f})")
        if max_cost is None:
            words.append("; no max_cost caps the spend")
        return "".join(words)


class Declined(Exception):
    """The caller's ``confirm`` said no: nothing was written or submitted."""


@dataclass
class RunResult:
    """How a run ended: the engine's summary and what the state says was spent."""

    summary: RunSummary
    spend: Spend
    spend_before: Spend
    warnings: list[str] = field(default_factory=list)
    #: Sources the plan left out (``--skip-bad``): the run did not render everything.
    skipped: int = 0
    #: Where results.jsonl and the review page were written.
    names: OutputNames | None = None

    @property
    def exit_code(self) -> int:
        """The CLI's exit code for this outcome: the fatal error's, 130 interrupted, 1 when
        jobs failed, were cancelled or not started or sources were left out, else 0."""
        summary = self.summary
        if summary.fatal is not None:
            return summary.fatal.exit_code
        if summary.interrupted:
            return 130
        if summary.failed or summary.not_started or summary.cancelled or self.skipped:
            return 1
        return 0


#: What the CLI gives a run to draw progress: called with the plan and a read-only view
#: of the state once it is open; its context is entered for the run.
ObserverFactory = Callable[[Plan, StateStore], AbstractContextManager["RunObserver"]]


def run(
    plan: Plan,
    options: RunOptions,
    *,
    fal: AbstractContextManager[FalConfig],
    retry_failed: bool = False,
    rerender: bool = False,
    observe: ObserverFactory | None = None,
    handle_signals: bool = False,
    http_timeout: float = 30.0,
    local_steps: dict[str, LocalStep] | None = None,
    skip_bad: bool = False,
    stop: threading.Event | None = None,
    confirm: Callable[[Estimate], bool] | None = None,
) -> RunResult:
    """Run every job of ``plan`` not yet done; resumes where an earlier run stopped.

    ``fal`` yields the fal configuration for the run (see :func:`fal_origin`).
    ``local_steps`` are the steps local jobs run (default: the ones raybatch ships,
    ``pipeline.STEPS``: cut, frame, stitch).
    ``handle_signals`` installs the Ctrl-C policy (first drains, second leaves requests
    to the next run); only the main thread may. Setting ``stop`` (from another thread)
    drains the run as a first Ctrl-C does. Refusals (sources left out without
    ``skip_bad``, a budget below the estimate, another run on the directory) come before
    anything is written or submitted; then ``confirm``, given what would be submitted, may
    say no (``Declined``). ``rerender``: jobs whose output is missing or altered are
    rendered again (priced in the estimate) instead of fetched again.
    """
    from .report import to_submit, unpriced_remaining

    refuse_bad_sources(plan, skip_bad)
    if options.concurrency < 1:
        raise ManifestError("usage: --concurrency must be at least 1")
    output_dir = plan.output_dir
    if plan.facts.output_dir is None and not plan.output_dir_given:
        check_default_output_dir(plan.manifest_path, output_dir)
    with reading(plan) as existing:
        jobs, remaining = to_submit(plan, existing, retry_failed=retry_failed)
        unpriced = unpriced_remaining(plan, existing, retry_failed=retry_failed)
        if rerender and existing is not None:
            remaining += rerender_cost(plan, existing)
    if options.max_cost is not None and unpriced:
        from .endpoints import unpriced_refusal

        raise ManifestError(unpriced_refusal(unpriced))
    if options.max_cost is not None and remaining > options.max_cost + 1e-9:
        raise ManifestError(
            f"the remaining jobs are estimated at ${remaining:.2f}, above --max-cost"
            f" ${options.max_cost:.2f}; nothing was submitted (raise the cap or use --only)"
        )
    if confirm is not None and not confirm(Estimate(jobs, remaining, unpriced)):
        raise Declined("not started")
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
                        rerender=rerender,
                        observe=observe,
                        handle_signals=handle_signals,
                        http_timeout=http_timeout,
                        local_steps=local_steps,
                        stop=stop,
                    )
                )
            named = _write_results(plan, store, result.summary)
        finally:
            reader.close()
            store.close()
    result.warnings += _refresh_review(plan, named.page)
    result.skipped, result.names = len(plan.skipped), named
    return result


async def _run(
    plan: Plan,
    store: StateStore,
    reader: StateStore,
    config: FalConfig,
    options: RunOptions,
    *,
    retry_failed: bool,
    rerender: bool,
    observe: ObserverFactory | None,
    handle_signals: bool,
    http_timeout: float,
    local_steps: dict[str, LocalStep] | None,
    stop: threading.Event | None = None,
) -> RunResult:
    from .fal import FalClient
    from .net import tls_context
    from .outputs import LocalSink
    from .pipeline import STEPS, Scheduler, keep_superseded, serve_requests
    from .state import Mailbox, open_writer

    # One TLS context for every client of the run: each costs a load of the CA bundle.
    context = tls_context()
    sink = LocalSink(plan.output_dir, ssl_context=context)
    spend_before = store.spend()
    async with open_writer(store) as writer:
        if not store.is_last_plan(plan.identity):
            await writer.apply(Transitions.add_plan(plan.jobs, plan.identity))
        await writer.apply(
            Transitions.note_manifest(str(plan.manifest_path.resolve()), plan.facts.name)
        )
        warnings = await keep_superseded(writer, sink)
        if retry_failed:
            await _reset_failed(writer, plan)
        # Outputs other jobs read are checked before anything starts; the rest (most of a
        # big library) beside the first submissions: a resume of 100k jobs half done
        # waited half a second for 50,000 stats. --rerender decides everything first.
        others = read_by_others(plan)
        first = [k for k in plan.keys if rerender or k in others]
        later = plan.jobs.keys_except(others) if not rerender else frozenset[str]()
        notes = (await recheck_outputs(writer, sink, first, rerender=rerender)).notes
        # The observer reads the state as it is now, resets included.
        observing = observe(plan, reader) if observe else nullcontext(None)
        with observing as observer:
            if observer is not None:
                for note in notes:
                    observer.on_note(note)
            async with FalClient(config, timeout=http_timeout, ssl_context=context) as client:
                scheduler = Scheduler(
                    plan.jobs,
                    writer,
                    client,
                    sink,
                    options,
                    observer,
                    local_steps=STEPS if local_steps is None else local_steps,
                    ssl_context=context,
                    extend=functools.partial(rerolled_jobs, plan, writer),
                    recheck=functools.partial(recheck_outputs, writer, sink, later, rerender=False),
                )
                async with anyio.create_task_group() as group:
                    if handle_signals:
                        # start(): the handlers are in place before the first submit.
                        await group.start(_signals, scheduler)
                    if stop is not None:
                        group.start_soon(_drain_when, stop, scheduler)
                    # `raybatch cancel` from another terminal asks this process.
                    group.start_soon(serve_requests, Mailbox(plan.output_dir), scheduler.cancel)
                    summary = await scheduler.run()
                    group.cancel_scope.cancel()
            spend = store.spend()
            if observer is not None:
                observer.on_finish(summary, spend, spend_before)
    return RunResult(summary, spend, spend_before, warnings)


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


async def _drain_when(stop: threading.Event, scheduler: Any) -> None:
    """Drain once ``stop`` is set (by a caller in another thread: the Python API)."""
    # Polled: waiting on it in a worker thread would leave that thread blocked after a run
    # that ends without it ever being set.
    while not stop.is_set():  # noqa: ASYNC110
        await anyio.sleep(0.2)
    scheduler.drain()


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


def _write_results(plan: Plan, store: StateStore, summary: RunSummary) -> OutputNames:
    from .report import adopt_plain_files, output_names, write_results

    manifests = store.manifests()
    adopt_plain_files(plan.output_dir, manifests)
    named = output_names(plan, manifests)
    try:
        # The whole plan, whatever --only/--exclude ran: a selection never shrinks the file.
        write_results(store, named.results, plan.whole.keys)
    except FatalError:
        if summary.fatal is None:
            raise
        # The run already stopped on a fatal error (a full disk, most likely): that one is
        # the message and the exit code; this one is a consequence.
    return named


def _refresh_review(plan: Plan, page: Path) -> list[str]:
    from .report import write_review_page

    try:
        # Bounded: at the end of a 100k-job run, a poster per new video would take an hour
        # of decoding; ``raybatch report`` makes the rest.
        write_review_page(plan.whole, posters=RUN_POSTERS, proxies=RUN_PROXIES, target=page)
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
