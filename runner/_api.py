"""The Python API: ``plan``, ``run`` (and ``run_async``) and ``status`` on a manifest, as the
CLI does them, returning values instead of printing and raising the error tree of
``runner.errors`` instead of exiting.

They are usable where an event loop already runs (a Jupyter notebook): ``run`` then works
in a thread of its own and blocks until it is done, and ``await run_async(...)`` leaves the
caller's loop free meanwhile. An interrupt while waiting (a notebook's "interrupt kernel",
Ctrl-C) drains the run as the CLI's first Ctrl-C does: nothing new is submitted, jobs at
fal are watched to the end of the grace period, and a later ``run`` resumes the rest.

The API never asks before spending (the CLI does, on a terminal): give ``max_cost`` to cap
what a run may submit. Everything heavy is imported on first call, so ``import raybatch``
stays cheap.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

if TYPE_CHECKING:
    from .plan import ClipFacts, DuplicateSource, Plan, SkippedSource

PathLike = str | os.PathLike[str]
T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True)
class PlanSummary:
    """What ``plan`` shows: the jobs, their estimated cost, what ran already, the sources
    left out; ``data`` is everything ``raybatch plan --json`` prints."""

    name: str
    output_dir: Path
    jobs: int
    estimated_cost: float
    #: Jobs on endpoints without a price: not in ``estimated_cost``.
    unpriced: int
    done: int
    #: Estimated USD of the jobs not yet paid for.
    remaining_cost: float
    skipped: tuple[SkippedSource, ...]
    duplicates: tuple[DuplicateSource, ...]
    #: Each source: its facts, what its jobs render and bill, and its warnings.
    clips: tuple[ClipFacts, ...]
    data: dict[str, Any]


@dataclass(frozen=True)
class RunResult:
    """How a run ended (``exit_code`` is what ``raybatch run`` would exit with)."""

    done: int
    failed: int
    cancelled: int
    not_started: int
    interrupted: bool
    #: Stopped submitting at ``max_cost``.
    budget_stopped: bool
    #: Submissions whose answer was lost, which fal may have billed twice.
    ambiguous_submits: int
    #: USD fal may have billed for this output directory, every run included.
    spent: float
    spent_this_run: float
    skipped: tuple[SkippedSource, ...]
    warnings: tuple[str, ...]
    output_dir: Path
    results: Path
    review_page: Path
    exit_code: int

    @property
    def ok(self) -> bool:
        """Every job is done and nothing was left out."""
        return self.exit_code == 0


def plan(
    manifest: PathLike,
    *,
    output_dir: PathLike | None = None,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    skip_bad: bool = False,
    prices: PathLike | None = None,
    decode: bool = False,
) -> PlanSummary:
    """Check a manifest and summarise its jobs, cost and sources (``raybatch plan
    --clips``); ``decode`` also decodes the end of each local clip to find truncated files.
    Raises ManifestError for a mistake, or for sources that cannot be used unless
    ``skip_bad``."""
    from . import session

    the_plan = _load(manifest, output_dir, only, exclude, skip_bad, prices)
    clips = session.clip_facts(the_plan, decode=decode)
    data = session.plan_summary(the_plan, skip_bad=skip_bad, clips=clips)
    total = data["total"]
    return PlanSummary(
        the_plan.facts.name,
        the_plan.output_dir,
        total["jobs"],
        total["estimated_cost"],
        total["unpriced"],
        total["done"],
        total["remaining_cost"],
        the_plan.skipped,
        the_plan.duplicates,
        tuple(clips),
        data,
    )


def status(
    manifest: PathLike,
    *,
    output_dir: PathLike | None = None,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    prices: PathLike | None = None,
) -> dict[str, Any]:
    """How far the manifest's runs got (``raybatch status --json``); safe during a run.
    Like the command it needs no source file and finds the state from any working
    directory; what it had to say about that is under ``"warnings"``."""
    from . import session
    from .manifest import load_overrides

    out = Path(output_dir) if output_dir is not None else None
    located = session.locate(
        Path(manifest),
        output_dir=out,
        only=list(only),
        exclude=list(exclude),
        overrides=load_overrides(Path(prices)) if prices is not None else None,
    )
    return session.located_status(located, only=only, exclude=exclude, output_dir=out)


def run(
    manifest: PathLike,
    *,
    output_dir: PathLike | None = None,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    local: bool = False,
    fal_url: str | None = None,
    concurrency: int | None = None,
    max_cost: float | None = None,
    retry_failed: bool = False,
    skip_bad: bool = False,
    prices: PathLike | None = None,
    on_ambiguous: Literal["resubmit", "fail"] = "resubmit",
    resubmit_expired: bool = False,
    grace: float = 120.0,
    retries: int = 8,
    max_outage: float = 1800.0,
    progress: bool = False,
) -> RunResult:
    """Run every job of the manifest not yet done (``raybatch run``); resumes after any
    interruption and pays for nothing twice. ``local`` starts the built-in fal emulator,
    ``fal_url`` names one; otherwise FAL_KEY from the environment is sent to fal.
    ``progress`` prints plain status lines to stderr. Raises the error tree (a ManifestError
    before anything is submitted, a FatalError when the run had to stop)."""
    call = functools.partial(
        _run,
        manifest,
        output_dir=output_dir,
        only=only,
        exclude=exclude,
        local=local,
        fal_url=fal_url,
        concurrency=concurrency,
        max_cost=max_cost,
        retry_failed=retry_failed,
        skip_bad=skip_bad,
        prices=prices,
        on_ambiguous=on_ambiguous,
        resubmit_expired=resubmit_expired,
        grace=grace,
        retries=retries,
        max_outage=max_outage,
        progress=progress,
    )
    if _loop_running():
        return _in_worker(call)
    return call(None)


def _awaitable(func: Callable[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
    """``func`` as a coroutine function that runs it in a worker thread (same parameters)."""

    @functools.wraps(func)
    async def in_a_thread(*args: P.args, **kwargs: P.kwargs) -> T:
        import anyio

        return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))

    return in_a_thread


run_async = _awaitable(run)
run_async.__name__ = run_async.__qualname__ = "run_async"
run_async.__doc__ = """``await run_async(manifest, ...)``: ``run`` (the same parameters) in a worker
thread, leaving the caller's event loop free while the batch runs."""


# --------------------------------------------------------------------------- internals


def _load(
    manifest: PathLike,
    output_dir: PathLike | None,
    only: Sequence[str],
    exclude: Sequence[str],
    skip_bad: bool,
    prices: PathLike | None,
) -> Plan:
    from . import session
    from .manifest import load_overrides

    return session.load(
        Path(manifest),
        output_dir=Path(output_dir) if output_dir is not None else None,
        only=list(only),
        exclude=list(exclude),
        overrides=load_overrides(Path(prices)) if prices is not None else None,
        skip_bad=skip_bad,
    )


def _run(
    manifest: PathLike,
    stop: threading.Event | None,
    *,
    output_dir: PathLike | None,
    only: Sequence[str],
    exclude: Sequence[str],
    local: bool,
    fal_url: str | None,
    concurrency: int | None,
    max_cost: float | None,
    retry_failed: bool,
    skip_bad: bool,
    prices: PathLike | None,
    on_ambiguous: Literal["resubmit", "fail"],
    resubmit_expired: bool,
    grace: float,
    retries: int,
    max_outage: float,
    progress: bool,
) -> RunResult:
    import sys
    from contextlib import ExitStack, contextmanager

    from . import session
    from .pipeline import RunOptions
    from .report import Progress
    from .state import StateStore

    the_plan = _load(manifest, output_dir, only, exclude, skip_bad, prices)
    if concurrency is None:
        concurrency = the_plan.facts.concurrency or session.DEFAULT_CONCURRENCY
    options = RunOptions(
        concurrency=concurrency,
        max_cost=max_cost if max_cost is not None else the_plan.facts.max_cost,
        on_ambiguous=on_ambiguous,
        resubmit_expired=resubmit_expired,
        grace=grace,
        retries=max(1, retries),
        max_outage=max_outage,
    )

    @contextmanager
    def observe(shown: Plan, store: StateStore) -> Iterator[Progress]:
        # Progress writes run.log whatever it shows; without ``progress`` it shows nothing.
        with ExitStack() as stack:
            stream = sys.stderr if progress else stack.enter_context(open(os.devnull, "w"))
            with Progress(shown, store, stream=stream) as observer:
                yield observer

    fal = session.fal_origin(
        local=local, fal_url=fal_url, state_dir=the_plan.output_dir / ".emulator"
    )
    main = threading.current_thread() is threading.main_thread() and stop is None
    result = session.run(
        the_plan,
        options,
        fal=fal,
        retry_failed=retry_failed,
        observe=observe,
        handle_signals=main,
        skip_bad=skip_bad,
        stop=stop,
    )
    fatal = result.summary.fatal
    if fatal is not None:
        raise fatal
    summary, names = result.summary, result.names
    assert names is not None
    return RunResult(
        summary.done,
        summary.failed,
        summary.cancelled,
        summary.not_started,
        summary.interrupted,
        summary.budget_stopped,
        summary.ambiguous,
        result.spend.usd,
        result.spend.usd - result.spend_before.usd,
        the_plan.skipped,
        tuple(result.warnings),
        the_plan.output_dir,
        names.results,
        names.page,
        result.exit_code,
    )


def _loop_running() -> bool:
    """Whether this thread runs an event loop (then a run needs a thread of its own)."""
    import asyncio  # here: importing it (and ssl with it) costs plan and status 9 MB

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        import sniffio

        try:
            sniffio.current_async_library()
        except sniffio.AsyncLibraryNotFoundError:
            return False
    return True


def _in_worker(call: Callable[[threading.Event], T]) -> T:
    """``call`` in a thread of its own; an interrupt while waiting drains it."""
    from concurrent.futures import ThreadPoolExecutor

    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raybatch-run")
    try:
        future = pool.submit(call, stop)
        try:
            return future.result()
        except KeyboardInterrupt:
            stop.set()  # as a first Ctrl-C: nothing new is submitted, in-flight jobs finish
            return future.result()
    finally:
        pool.shutdown(wait=False)
