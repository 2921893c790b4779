"""``raybatch cancel``: cancel a plan's requests at fal and mark their jobs cancelled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..fal import FalClient
from ..state import JobState, StateWriter, Transitions


@dataclass(frozen=True)
class CancelOutcome:
    """What ``raybatch cancel`` did to one job."""

    key: str
    label: str
    note: str
    cancelled: bool


_CANCEL_NOTES = {
    "requested": "cancellation requested at fal (a job already running may still finish and bill)",
    "already_completed": "already completed at fal; the next run downloads it",
    "not_found": "unknown to fal; marked cancelled",
}


async def cancel_requests(
    writer: StateWriter, keys: Sequence[str], client: FalClient
) -> list[CancelOutcome]:
    """Cancel the requests of these jobs that are at fal, and mark them cancelled.

    Jobs not yet submitted stay pending (the next ``run`` submits them); a request fal
    already completed is left alone so its paid-for result is still downloaded.
    """
    wanted = set(keys)
    outcomes: list[CancelOutcome] = []
    ops = []
    for row in writer.store.rows_in((JobState.QUEUED, JobState.RUNNING)):
        if row.key not in wanted or not row.request_id:
            continue
        cancel_url = row.cancel_url or client.request_urls(row.endpoint, row.request_id)[2]
        answer = await client.cancel(cancel_url)
        cancelled = answer != "already_completed"
        if cancelled:
            ops.append(Transitions.cancelled(row.key, _CANCEL_NOTES[answer]))
        label = f"{row.clip or '-'}/{row.prompt or '-'}"
        outcomes.append(CancelOutcome(row.key, label, _CANCEL_NOTES[answer], cancelled))
    if ops:
        await writer.apply(*ops)
    return outcomes
