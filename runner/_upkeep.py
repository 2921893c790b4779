"""``cancel`` and ``verify``: commands that change a batch's state without running it;
and the check of done outputs ``run`` makes before it starts (``recheck_outputs``).

Only the process holding the output directory's lock writes its state. With no run
going, these commands take the lock and write themselves. While a run holds it,
``cancel`` asks that run through the directory's mailbox (``state.Mailbox``) and prints
its answer, and ``verify`` checks and reports but leaves the marks to a later run.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from .errors import StateError, StateLocked
from .job import job_label
from .plan import Plan
from .state import DirectoryLock, Mailbox, StateStore, StateWriter

if TYPE_CHECKING:
    from .fal import FalConfig
    from .outputs import OutputSink
    from .pipeline import CancelOutcome, Rechecked

#: How long ``cancel`` waits for a running process to take its request.
ANSWER_SECONDS = 30.0
_POLL = 0.1


@dataclass
class Cancelled:
    """What ``raybatch cancel`` did."""

    outcomes: list[CancelOutcome]
    #: The pid of the run that did it, or None when no run was going.
    by_run: int | None = None


def cancel(plan: Plan, fal: AbstractContextManager[FalConfig]) -> Cancelled | None:
    """Cancel the plan's unfinished jobs: those at fal are asked to stop there (see
    ``pipeline.cancel_requests``). Done by the run that holds the directory if there is
    one, else here (``fal`` is entered only then). None when nothing has run there."""
    if not (plan.output_dir / "state.db").exists():
        return None
    lock, mailbox = DirectoryLock(plan.output_dir), Mailbox(plan.output_dir)
    ticket: str | None = None
    posted_to: int | None = None
    deadline = time.monotonic() + ANSWER_SECONDS
    while True:
        # The answer first: a run that answered may have ended since.
        answer = mailbox.answered(ticket) if ticket is not None else None
        if answer is not None:
            return _answered(answer, posted_to)
        try:
            lock.acquire()
        except StateLocked:
            holder = lock.holder()
        else:
            try:
                if ticket is not None:
                    answer = mailbox.answered(ticket)  # answered just before it ended?
                    if answer is not None:
                        return _answered(answer, posted_to)
                    mailbox.withdraw(ticket)
                return Cancelled(_cancel_here(plan, fal))
            finally:
                lock.release()
        if (
            holder is not None
            and holder != posted_to
            and (ticket is None or mailbox.withdraw(ticket))
        ):
            # First time, or the lock changed hands before the request was taken.
            ticket, posted_to = mailbox.post(holder, "cancel", {"keys": plan.keys}), holder
        late = time.monotonic() - deadline
        if late > 0 and ticket is not None and mailbox.withdraw(ticket):
            raise StateError(
                f"the run holding {plan.output_dir} (pid {holder}) did not take the cancel"
                f" request within {ANSWER_SECONDS:g}s; nothing was cancelled"
            )
        if late > 4 * ANSWER_SECONDS:
            raise StateError(
                f"the run holding {plan.output_dir} (pid {holder}) took the cancel request"
                " but has not answered; `raybatch status` shows what it did"
            )
        time.sleep(_POLL)


def _answered(answer: dict[str, object], pid: int | None) -> Cancelled:
    from .pipeline import CancelOutcome

    if "error" in answer:
        raise StateError(f"the running raybatch (pid {pid}) could not cancel: {answer['error']}")
    outcomes = answer.get("outcomes")
    assert isinstance(outcomes, list)
    return Cancelled([CancelOutcome.from_json(o) for o in outcomes], by_run=pid)


def _cancel_here(plan: Plan, fal: AbstractContextManager[FalConfig]) -> list[CancelOutcome]:
    """Cancel with no run going (the caller holds the lock); fal is reached only when a
    job holds a request there."""
    from .fal import FalClient
    from .pipeline import cancel_requests
    from .state import open_writer

    async def work(store: StateStore, config: FalConfig | None) -> list[CancelOutcome]:
        async with open_writer(store) as writer:
            if config is None:
                return await cancel_requests(writer, plan.keys, None)
            async with FalClient(config) as client:
                return await cancel_requests(writer, plan.keys, client)

    store = StateStore.open(plan.output_dir / "state.db")
    try:
        wanted = set(plan.keys)
        if not any(key in wanted for key in store.requests_in_flight()):
            return anyio.run(work, store, None)
        with fal as config:
            return anyio.run(work, store, config)
    finally:
        store.close()


@dataclass
class Verified:
    """What ``raybatch verify`` found."""

    checked: int  # done jobs whose files were checked
    damaged: list[tuple[str, str]]  # (job label, what is wrong), one per damaged job
    #: The damaged jobs now need fetching (False while a run holds the directory).
    marked: bool
    full: bool


def verify(plan: Plan, *, full: bool = False) -> Verified | None:
    """Check every done output of ``plan`` against the state (size and mtime; ``full``:
    sha256); a missing or altered one is marked "needs fetch", so the next run downloads
    it again. None when nothing has run there."""
    from .outputs import LocalSink
    from .pipeline import damaged_outputs, mark_damaged
    from .state import open_writer

    path = plan.output_dir / "state.db"
    if not path.exists():
        return None
    sink = LocalSink(plan.output_dir)

    def check(store: StateStore) -> tuple[int, dict[str, str]]:
        files = store.done_outputs(plan.keys)
        return len(files), damaged_outputs(files, sink, full=full)

    async def mark(store: StateStore, damaged: dict[str, str]) -> None:
        async with open_writer(store) as writer:
            await mark_damaged(writer, damaged)

    lock = DirectoryLock(plan.output_dir)
    try:
        lock.acquire()
    except StateLocked:
        reader = StateStore.open_readonly(path)
        assert reader is not None
        try:
            checked, damaged = check(reader)
        finally:
            reader.close()
        marked = False
    else:
        try:
            store = StateStore.open(path)
            try:
                checked, damaged = check(store)
                if damaged:
                    anyio.run(functools.partial(mark, store, damaged))
            finally:
                store.close()
        finally:
            lock.release()
        marked = True
    return Verified(checked, _labelled(plan, damaged), marked, full)


def _labelled(plan: Plan, damaged: dict[str, str]) -> list[tuple[str, str]]:
    c = plan.columns
    return [
        (job_label(endpoint, clip, prompt, labels), damaged[key])
        for key, endpoint, clip, prompt, labels in zip(
            c.keys, c.endpoints, c.clips, c.prompts, c.labels, strict=True
        )
        if key in damaged
    ]


def read_by_others(plan: Plan) -> set[str]:
    """The jobs whose outputs other jobs of the plan read (parents, gating looks): a run
    checks theirs before it starts anything."""
    c = plan.columns
    found = {parent for parents in c.parents for parent in parents}
    if c.gates:
        found.update(gate for gates in c.gates for gate in gates)
    return found


def _damaged(path: Path, keys: Collection[str], sink: OutputSink) -> dict[str, str]:
    """In a worker thread, with its own read-only connection: the damaged done outputs of
    ``keys`` (a stat each; 50,000 of them take half a second)."""
    from .pipeline import damaged_outputs

    reader = StateStore.open_readonly(path)
    if reader is None:
        return {}
    try:
        return damaged_outputs(reader.each_done_output(keys), sink)
    finally:
        reader.close()


async def recheck_outputs(
    writer: StateWriter, sink: OutputSink, keys: Collection[str], *, rerender: bool
) -> Rechecked:
    """Before a run calls anything done: a stat of each done output of ``keys``; a missing
    or altered one is fetched again (or with ``rerender`` rendered again)."""
    from .pipeline import Rechecked, mark_damaged, to_rerender

    if not keys:
        return Rechecked([], [])
    damaged = await anyio.to_thread.run_sync(_damaged, writer.store.path, keys, sink)
    again = to_rerender(writer.store, keys, damaged) if rerender else []
    await mark_damaged(writer, damaged, rerender=again)
    notes = []
    if damaged:
        shown = "; ".join(list(damaged.values())[:3]) + (" …" if len(damaged) > 3 else "")
        notes.append(f"{len(damaged)} done job(s) have outputs missing or altered ({shown})")
    if again:
        notes.append(f"rendering {len(again)} job(s) again (--rerender): billed again")
    elif damaged:
        notes.append("fetching them again from their kept results (not billed again)")
    return Rechecked(notes, sorted({*damaged, *again}))


def rerender_cost(plan: Plan, store: StateStore) -> float:
    """What ``--rerender`` adds to the estimate: the jobs it would render again."""
    from .outputs import LocalSink
    from .pipeline import damaged_outputs, to_rerender

    damaged = damaged_outputs(store.done_outputs(plan.keys), LocalSink(plan.output_dir))
    again = set(to_rerender(store, plan.keys, damaged))
    columns = plan.columns
    return sum(c or 0.0 for k, c in zip(columns.keys, columns.costs, strict=True) if k in again)
