"""The engine's vocabulary: a run's options, what it tells an observer, how it ended, and
the controls every job task shares (stopping, the budget)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import anyio

from ..errors import RaybatchError
from ..job import JobSpec
from ..state import JobState, Spend
from ._policy import Limits


@dataclass(frozen=True)
class RunOptions:
    """Knobs of one run; the defaults suit a real fal account."""

    concurrency: int = 8
    #: Requests kept waiting at fal beyond ``concurrency``, so a freed slot starts at once.
    queue_buffer: int | None = None
    uploads: int = 4
    downloads: int = 4
    #: Local steps (cut, frame, stitch) at once: CPU-bound, so about the core count.
    local_workers: int = 2
    status_per_second: float = 20.0
    #: Calls per call site before a retryable failure fails the job (``--retries``).
    retries: int = 8
    #: Accepted (paid) submissions per job before it fails.
    max_submissions: int = 3
    #: Seconds one call site may spend retrying (waits at the outage gate excluded).
    stage_deadline: float = 1800.0
    #: Seconds fal may stay unreachable before the run stops (``--max-outage``).
    max_outage: float = 1800.0
    #: Failures in a row (no answer, or a 5xx, across all calls) that close the outage gate.
    outage_after: int = 5
    #: The first pause before a probe while the outage gate is closed (then doubling).
    outage_probe: float = 1.0
    on_ambiguous: Literal["resubmit", "fail"] = "resubmit"
    resubmit_expired: bool = False
    watch: Literal["stream", "poll"] = "stream"
    max_cost: float | None = None
    grace: float = 120.0
    poll_initial: float = 1.0
    poll_max: float = 15.0
    #: A status stream silent this long (no event, no ping) is given up for polling.
    stream_idle: float = 30.0
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    #: Seconds between looks at the state for verdicts, while jobs wait for them.
    verdict_poll: float = 2.0
    #: With nothing else to do, wait for verdicts instead of ending (``--wait-for-verdicts``).
    wait_for_verdicts: bool = False
    #: Which ready job goes first: the one with the longest remaining chain, or (for the
    #: bench's comparison only; no command line option sets it) the first in plan order.
    ready_order: Literal["critical-path", "fifo"] = "critical-path"

    @property
    def slots(self) -> int:
        """Requests allowed to exist at fal at once."""
        buffer = self.queue_buffer
        if buffer is None:
            buffer = max(2, math.ceil(self.concurrency * 0.1))
        return self.concurrency + buffer

    @property
    def limits(self) -> Limits:
        """The numbers the fault-policy table applies."""
        return Limits(
            attempts=self.retries,
            stage_deadline=self.stage_deadline,
            max_submissions=self.max_submissions,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
        )


class RunObserver(Protocol):
    """What the engine tells whoever draws progress (the engine draws nothing itself)."""

    def on_state(self, spec: JobSpec, state: JobState, detail: str | None) -> None:
        """A job moved to ``state`` (a stored state, or a phase such as uploading)."""

    def on_bytes(self, direction: Literal["up", "down"], count: int) -> None:
        """``count`` more bytes moved."""

    def on_note(self, message: str) -> None:
        """Something the user should read (a policy applied, a budget reached)."""

    def on_reopened(self, spec: JobSpec, state: JobState, detail: str | None) -> None:
        """A done job went back to ``state``: its outputs were found missing or altered."""

    def on_finish(self, summary: RunSummary, spend: Spend, spend_before: Spend) -> None:
        """The run ended; ``spend`` is the state's now, ``spend_before`` at its start."""


class NullObserver:
    """An observer that ignores everything."""

    def on_state(self, spec: JobSpec, state: JobState, detail: str | None) -> None:
        """Ignore."""

    def on_bytes(self, direction: Literal["up", "down"], count: int) -> None:
        """Ignore."""

    def on_note(self, message: str) -> None:
        """Ignore."""

    def on_reopened(self, spec: JobSpec, state: JobState, detail: str | None) -> None:
        """Ignore."""

    def on_finish(self, summary: RunSummary, spend: Spend, spend_before: Spend) -> None:
        """Ignore."""


@dataclass
class RunSummary:
    """How a run ended (spend is the state's: ``StateStore.spend``)."""

    done: int = 0
    failed: int = 0
    cancelled: int = 0
    not_started: int = 0
    ambiguous: int = 0
    resubmitted: int = 0
    interrupted: bool = False
    budget_stopped: bool = False
    fatal: RaybatchError | None = None
    #: Estimated USD of the submissions this run made (reserved before each POST).
    submitted_cost: float = 0.0
    #: Jobs held for a look nobody has judged yet (and jobs below them), and their cost.
    awaiting_verdict: int = 0
    awaiting_cost: float = 0.0
    #: Jobs held by a rejected look (a reroll makes a new take), and their cost.
    held_by_rejection: int = 0
    held_cost: float = 0.0


class Stopped(Exception):
    """Internal: this job must not start now (draining, budget, fatal error)."""


class Controls:
    """What every job task of a run shares: whether new work may start, and the budget."""

    def __init__(self, options: RunOptions, observer: RunObserver, summary: RunSummary) -> None:
        self._max_cost = options.max_cost
        self._observer = observer
        self._summary = summary
        self._waiting: set[anyio.CancelScope] = set()
        self.stop_reason: str | None = None

    def stop(self, reason: str) -> None:
        """Start nothing new from now on (said once); work not yet at fal stops waiting."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self._observer.on_note(reason)
        for scope in self._waiting:
            scope.cancel()

    @contextlib.contextmanager
    def cancellable(self) -> Iterator[None]:
        """A block of work that ends at once when the run stops (uploads, a submit pause,
        waiting at a gate): only the shielded window from a submit's intent to its
        recorded answer is never cut short. The caller checks what got done."""
        with anyio.CancelScope() as scope:
            if self.stop_reason is not None:
                scope.cancel()
            self._waiting.add(scope)
            try:
                yield
            finally:
                self._waiting.discard(scope)

    def check(self) -> None:
        """Raise :class:`Stopped` when new work may not start."""
        if self.stop_reason is not None:
            raise Stopped(self.stop_reason)

    def reserve(self, cost: float) -> None:
        """Count ``cost`` before its POST, or stop submitting if it would pass --max-cost.
        Reserving (rather than counting after fal answers) keeps many concurrent submits
        from all slipping under the cap at once."""
        spent = self._summary.submitted_cost
        if self._max_cost is not None and spent + cost > self._max_cost + 1e-9:
            self._summary.budget_stopped = True
            self.stop(
                f"budget reached: ${spent:.2f} submitted in this run and the next job"
                f" (${cost:.2f}) would pass --max-cost ${self._max_cost:.2f};"
                " submitting nothing more"
            )
            raise Stopped(self.stop_reason)
        self._summary.submitted_cost = spent + cost

    def release(self, cost: float) -> None:
        """fal refused the POST outright: nothing was bought."""
        self._summary.submitted_cost -= cost
