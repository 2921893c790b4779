"""The fault-policy table: what the engine does about each kind of failure, in one place.

Every failure reaches the engine as one class of ``runner.errors``; this table maps
(stage, class) to one action. The first matching row wins, stage-specific rows before
the catch-all (``"*"``), a class's own rows before its base classes'.

==========  ===========================  ==========================================
action      what happens                 attempts and limits
==========  ===========================  ==========================================
RETRY       the same call again, after   ``--retries`` calls per call site (8), with
            an exponential backoff       exponential backoff (0.5 s doubling to 30 s,
            with jitter                  jittered), within ``stage_deadline`` seconds
GATE        wait at a shared gate, then  a 429 costs one attempt; its Retry-After
            call again                   pause is shared by every submit and costs
                                         none. While the outage gate is closed (fal
                                         unreachable, or 5xx to everything) calls
                                         wait and no attempt is used, for up to
                                         ``--max-outage`` seconds (then STOP)
RESUBMIT    drop the request, submit a   up to ``max_submissions`` (3) accepted
            new one: **paid again**      submissions per job; counted in ``status``
REATTACH    follow the known request     only ``--retry-failed`` (and every resume)
            instead of submitting
FAIL        the job fails with the       the rest of the batch goes on; a fetched
            reason                       result is kept, so ``--retry-failed``
                                         downloads again without paying
STOP        the run stops: exit 3        nothing new is submitted
==========  ===========================  ==========================================

Two rows depend on the user's flags: an ambiguous submit (``--on-ambiguous resubmit``,
the default, or ``fail``), and a request fal no longer knows or a result that expired
(``--resubmit-expired`` resubmits; by default the job fails, since rendering again is
billed again). Any other 4xx about an existing request never pays again.

Retries use stamina (``stamina.retry_context``): its attempts, total deadline, jittered
backoff, and its testing mode (``stamina.set_testing``) that tests use to skip the waits.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import stamina

from ..errors import (
    AuthError,
    ContentModerated,
    DiskError,
    DownloadError,
    FatalError,
    InputRejected,
    LocalFileError,
    LocalStepFailed,
    PermanentError,
    RateLimited,
    RaybatchError,
    RemoteJobError,
    RemoteJobFailed,
    RequestLost,
    RequestRefused,
    ResultExpired,
    RetryableError,
    ServiceUnavailable,
    StateError,
    SubmitUnconfirmed,
    TransportError,
    UnsafeOutput,
)
from ..state import JobRow, JobState
from ._gates import Gates

_T = TypeVar("_T")

Stage = Literal["upload", "submit", "status", "result", "download", "local"]


class Action(enum.Enum):
    """What the engine does about a failure (see the module docstring)."""

    RETRY = "retry the same call with backoff"
    GATE = "wait at a shared gate"
    REATTACH = "re-attach to the known request"
    RESUBMIT = "submit again as a new, paid request"
    FAIL = "fail the job"
    STOP = "stop the run"


#: Flag-dependent rows name a placeholder action, resolved by :class:`Policy`.
_AMBIGUOUS = "on-ambiguous"
_EXPIRED = "resubmit-expired"

#: (stage or "*", error class) → action. Read top to bottom as the README's fault table.
TABLE: dict[tuple[str, type[RaybatchError]], Action | str] = {
    ("*", AuthError): Action.STOP,
    ("*", DiskError): Action.STOP,
    ("*", StateError): Action.STOP,
    ("*", FatalError): Action.STOP,
    ("*", RateLimited): Action.GATE,
    ("submit", SubmitUnconfirmed): _AMBIGUOUS,
    ("*", TransportError): Action.RETRY,
    ("*", ServiceUnavailable): Action.RETRY,
    ("download", DownloadError): Action.RETRY,
    ("status", RequestLost): _EXPIRED,
    ("result", RequestLost): _EXPIRED,
    ("result", ResultExpired): _EXPIRED,
    ("*", RequestRefused): Action.FAIL,
    ("*", RemoteJobError): Action.RESUBMIT,
    ("*", ContentModerated): Action.FAIL,
    ("*", InputRejected): Action.FAIL,
    ("*", RemoteJobFailed): Action.FAIL,
    ("*", UnsafeOutput): Action.FAIL,
    ("*", LocalStepFailed): Action.FAIL,
    ("*", LocalFileError): Action.FAIL,
    ("*", PermanentError): Action.FAIL,
    ("*", RetryableError): Action.RETRY,
}

#: Failures whose request is fine and only following it failed here: ``--retry-failed``
#: re-attaches to the request (or downloads its kept result) instead of paying again.
#: ``Cancelled`` is there because fal's cancel is best effort: the request may have
#: finished, billed, and hold a normal result.
_REATTACHABLE = frozenset(
    {
        "TransportError",
        "ServiceUnavailable",
        "RateLimited",
        "DownloadError",
        "RequestRefused",
        "AuthError",
        "DiskError",
        "OutageTooLong",
        "StateError",
        "UnsafeOutput",
        "Cancelled",
        "OutputMissing",
    }
)


@dataclass(frozen=True)
class Limits:
    """The numbers of the table's "attempts and limits" column."""

    attempts: int = 8
    stage_deadline: float = 1800.0
    max_submissions: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


class Policy:
    """The table with the user's flags applied, and the one retrying call of the engine."""

    def __init__(
        self,
        gates: Gates,
        limits: Limits | None = None,
        *,
        on_ambiguous: Literal["resubmit", "fail"] = "resubmit",
        resubmit_expired: bool = False,
    ) -> None:
        self.gates = gates
        self.limits = limits or Limits()
        self._flags = {
            _AMBIGUOUS: Action.RESUBMIT if on_ambiguous == "resubmit" else Action.FAIL,
            _EXPIRED: Action.RESUBMIT if resubmit_expired else Action.FAIL,
        }

    def action(self, stage: Stage, error: BaseException) -> Action:
        """What to do about ``error`` met at ``stage`` (anything unclassified: FAIL)."""
        if not isinstance(error, RaybatchError):
            return Action.FAIL
        for cls in type(error).__mro__:
            for where in (stage, "*"):
                found = TABLE.get((where, cls))
                if found is not None:
                    return found if isinstance(found, Action) else self._flags[found]
        return Action.FAIL

    def retry_failed(self, row: JobRow) -> JobState:
        """Where ``--retry-failed`` puts a failed or cancelled job (see :func:`retry_state`)."""
        return retry_state(row)

    async def call(self, stage: Stage, fn: Callable[[], Awaitable[_T]]) -> _T:
        """``fn()``, retried as the table says; returns its value or raises the failure
        that no retry may fix (the caller asks :meth:`action` what to do with it).

        Calls wait at the stage's gates first. A failure the outage gate absorbs (the
        service looks down) uses no attempt: the call waits at the gate and starts over.
        """
        gate = self.gates.for_stage(stage)
        while True:
            try:
                async for attempt in stamina.retry_context(
                    on=self._retry_hook(stage),
                    attempts=self.limits.attempts,
                    timeout=self.limits.stage_deadline,
                    wait_initial=self.limits.backoff_initial,
                    wait_max=self.limits.backoff_max,
                    wait_jitter=self.limits.backoff_initial,
                ):
                    with attempt:
                        probe = await self.gates.before(stage)
                        try:
                            value = await fn()
                        except RaybatchError as exc:
                            if gate.absorbs(exc):
                                raise _Held from exc
                            raise
                        except BaseException:
                            if probe:
                                gate.abandon_probe()
                            raise
                        gate.succeeded()
                        return value
            except _Held:
                continue
        raise AssertionError("unreachable")  # pragma: no cover

    def _retry_hook(self, stage: Stage) -> Callable[[Exception], bool | float]:
        def hook(exc: Exception) -> bool | float:
            if isinstance(exc, _Held):
                return False
            action = self.action(stage, exc)
            if action is Action.GATE and isinstance(exc, RateLimited):
                if exc.retry_after is None:
                    return True  # stamina's own backoff
                if stage == "submit":
                    # Every submit pauses, at the gate; this call waits there too.
                    self.gates.pause_submits(exc.retry_after)
                    return 0.0
                return exc.retry_after
            return action is Action.RETRY

        return hook


def retry_state(row: JobRow) -> JobState:
    """Where ``--retry-failed`` puts a failed or cancelled job: download its kept result
    again, re-attach to its request, wait for its parents, or (only when the request
    itself failed, or there is none) submit anew."""
    if row.error_class == "Blocked":
        return JobState.BLOCKED
    if row.result is not None:
        return JobState.COMPLETED
    if row.request_id and row.error_class in _REATTACHABLE:
        return JobState.QUEUED
    return JobState.PENDING


class _Held(Exception):
    """Internal: the outage gate absorbed a failure; wait at the gate and call again."""
