"""Cancelling jobs: ``raybatch cancel`` with no run going (this process asks fal and
records the outcome), and during a run (the running process does both: see
``Scheduler.cancel``, asked through the directory's mailbox).

A job not yet submitted is simply marked cancelled: no run submits it until
``--retry-failed``. For a job at fal, cancel is best effort (fal-protocol §5, from fal's
"Asynchronous Inference" docs, read 2026-11-20): a queued request is removed and never
runs, so it is never billed; a running one only gets a signal and may finish, bill and
return its normal result. So the job ends as fal reports: COMPLETED ``client_cancelled``
is ``cancelled`` (not billed when raybatch never saw it running), a normal result is
downloaded and the job is ``done``, its spend counted. A result fal already holds is
never thrown away.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import anyio

from ..errors import RaybatchError
from ..fal import FalClient
from ..job import job_label
from ..state import JobRow, JobState, Mailbox, Op, StateWriter, Transitions

Answer = Literal["requested", "already_completed", "not_found"]

#: How often a run looks for requests from other raybatch processes, in seconds.
POLL_SECONDS = 0.25

#: What a cancel did, by case (shown by ``raybatch cancel``, kept as the job's note).
NOTES = {
    "unsubmitted": "cancelled before it was submitted",
    "submitting": "cancelling before it reaches fal (or, if its submit is under way, at fal"
    " as soon as fal answers it)",
    "requested": "cancellation requested at fal: a queued request is dropped (not billed);"
    " one already running may still finish and bill, and then its output is kept",
    "already_completed": "already completed at fal: its output is downloaded (billed)",
    "not_found": "unknown to fal; marked cancelled",
    "dropped": "cancelled at fal before it ran (not billed)",
    "stopped": "cancelled at fal while it ran (fal may bill it)",
    "was_running": "was running at fal when cancelled: it may still finish and bill; `raybatch"
    " run --retry-failed` re-attaches and downloads it if it does",
    "finished": "finished at fal before the cancel took effect: the next run downloads it",
    "ambiguous": "its submit was cut off before fal's answer: it may exist at fal (counted as"
    " paid; check fal's dashboard); not submitted again",
}


@dataclass(frozen=True)
class CancelOutcome:
    """What ``raybatch cancel`` did to one job."""

    key: str
    label: str
    note: str
    cancelled: bool  # marked cancelled now (others end as fal reports)

    def to_json(self) -> dict[str, Any]:
        """The form a running process answers with (see ``state.Mailbox``)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CancelOutcome:
        """The outcome a running process answered."""
        return cls(str(data["key"]), str(data["label"]), str(data["note"]), bool(data["cancelled"]))


def outcome(key: str, label: str, case: str, cancelled: bool) -> CancelOutcome:
    """An outcome by case (see :data:`NOTES`)."""
    return CancelOutcome(key, label, NOTES[case], cancelled)


def _label(row: JobRow) -> str:
    return job_label(row.endpoint, row.clip, row.prompt, row.labels)


def cancel_url(client: FalClient, endpoint: str, request_id: str, recorded: str | None) -> str:
    """The URL to cancel a request at: as recorded, or rebuilt at this client's queue when
    it was recorded on another origin (an emulator on another port)."""
    if recorded and client.owns(recorded):
        return recorded
    return client.request_urls(endpoint, request_id)[2]


def ended_cancelled(key: str, error_type: str | None, never_ran: bool) -> Op:
    """The transition for a cancelled job whose request fal reports ended: not billed when
    fal dropped it from its queue (``client_cancelled`` and never seen running)."""
    dropped = error_type == "client_cancelled" and never_ran
    return Transitions.cancelled(key, NOTES["dropped" if dropped else "stopped"], unbilled=dropped)


async def cancel_requests(
    writer: StateWriter, keys: Iterable[str], client: FalClient | None
) -> list[CancelOutcome]:
    """Cancel these jobs when no run follows them: mark the unsubmitted ones cancelled, ask
    fal to cancel the requests it holds and look once at how each ended.

    A request that completed normally is left for the next run to download; one still
    running is marked cancelled, and ``--retry-failed`` re-attaches to it (it may finish).
    A job caught mid-submit (the ambiguous case) is counted as paid and cancelled.
    ``client`` may be None when no job of ``keys`` holds a request at fal.
    """
    wanted = set(keys)
    outcomes: list[CancelOutcome] = []
    ops: list[Op] = []
    waiting = (JobState.BLOCKED, JobState.PENDING, JobState.QUEUED, JobState.RUNNING)
    for row in writer.store.rows_in((*waiting, JobState.SUBMITTING)):
        if row.key not in wanted:
            continue
        if row.state is JobState.SUBMITTING:
            ops.append(Transitions.ambiguous(row.key, resubmit=True))
            ops.append(Transitions.cancelled(row.key, NOTES["ambiguous"]))
            outcomes.append(outcome(row.key, _label(row), "ambiguous", True))
            continue
        if not row.state.accepted or not row.request_id:
            ops.append(Transitions.cancelled(row.key, NOTES["unsubmitted"]))
            outcomes.append(outcome(row.key, _label(row), "unsubmitted", True))
            continue
        assert client is not None, "a job at fal needs a client to cancel it"
        case, op = await _cancel_one(client, row)
        if op is not None:
            ops.append(op)
        outcomes.append(outcome(row.key, _label(row), case, op is not None))
    if ops:
        await writer.apply(*ops)
    return outcomes


async def _cancel_one(client: FalClient, row: JobRow) -> tuple[str, Op | None]:
    """Cancel one request no run follows, and look once at where that left it."""
    assert row.request_id is not None
    url = cancel_url(client, row.endpoint, row.request_id, row.cancel_url)
    answer = await client.cancel(url)
    if answer == "already_completed":
        return answer, None
    if answer == "not_found":
        return answer, Transitions.cancelled(row.key, NOTES["not_found"])
    status_url = client.request_urls(row.endpoint, row.request_id)[0]
    if row.status_url and client.owns(row.status_url):
        status_url = row.status_url
    try:
        status = await client.status(status_url)
    except RaybatchError:
        return "was_running", Transitions.cancelled(row.key, NOTES["was_running"])
    if status.state == "COMPLETED" and status.error_type:
        never_ran = row.state is JobState.QUEUED
        case = "dropped" if status.error_type == "client_cancelled" and never_ran else "stopped"
        return case, ended_cancelled(row.key, status.error_type, never_ran)
    if status.state == "COMPLETED":
        return "finished", None
    return "was_running", Transitions.cancelled(row.key, NOTES["was_running"])


async def serve_requests(
    mailbox: Mailbox,
    cancel: Callable[[list[str]], Awaitable[list[CancelOutcome]]],
    *,
    interval: float = POLL_SECONDS,
) -> None:
    """Answer other processes' requests to this run (``raybatch cancel``) until cancelled:
    ``cancel`` is the run's :meth:`Scheduler.cancel`."""
    pid = os.getpid()
    while True:
        for request in mailbox.take(pid):
            if request.kind != "cancel":
                mailbox.answer(request.ticket, {"error": f"unknown request {request.kind!r}"})
                continue
            keys = [str(key) for key in request.body.get("keys", [])]
            try:
                done = await cancel(keys)
            except RaybatchError as exc:
                mailbox.answer(request.ticket, {"error": str(exc)})
                continue
            mailbox.answer(request.ticket, {"outcomes": [o.to_json() for o in done]})
        await anyio.sleep(interval)
