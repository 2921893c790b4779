"""The commands about judging and handing over, on one manifest: ``judge`` (verdicts and
notes from the Python API), ``review`` (the served page), ``reroll``, ``export`` and
``show``. Part of ``runner.session``, which re-exports them; kept apart for size.

Verdicts, notes and rerolls are a person's writes: they go through a writer beside any
run (``StateStore.open_beside_runs``, no directory lock), never change a job's state, and
a run waiting for verdicts notices them at its next poll.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from . import session
from .errors import StateError
from .job import JobSpec, take_group
from .plan import Plan
from .state import StateStore, StateWriter, Transitions

if TYPE_CHECKING:
    from .export import Choice, ExportResult


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

    with session.reading(plan) as store:
        return job_story(plan, store, find_job(plan, store, which))


def export(plan: Plan, folder: Path, *, choose: Choice = "approved") -> ExportResult:
    """Deliver the plan's approved (or all done) takes into ``folder``, with a delivery
    list and a timeline; ManifestError on a name taken by other bytes (nothing written)."""
    from .export import export as deliver

    with session.reading(plan) as store:
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
    whole = session.load(plan.manifest_path, output_dir=given)
    with session.reading(plan) as store:
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
    after = session.load(plan.manifest_path, output_dir=given)
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
        whole = session.load(plan.manifest_path, output_dir=given)
        return whole, whole.selected(only, exclude)

    whole, shown = reload()
    serve_review(ReviewSession(shown, whole, reload), port=port, on_ready=on_ready)


async def rerolled_jobs(plan: Plan, writer: StateWriter) -> list[JobSpec]:
    """The jobs of takes rerolled during the run (from a review page), added to the state
    so the run takes them on: only those, never another edit of the manifest."""
    from .report import group_of

    def find() -> list[JobSpec]:
        given = plan.output_dir if plan.output_dir_given else None
        whole = session.load(plan.manifest_path, output_dir=given)
        with session.reading(plan) as store:
            rolled = {(r["group"], r["take"]) for r in store.rerolls()} if store else set()
        known = set(plan.keys)
        return [
            spec
            for spec in whole.jobs
            if spec.key not in known
            and (
                (group_of(spec), spec.take) in rolled
                or (take_group(spec.clip, spec.prompt, {}), spec.take) in rolled
            )
        ]

    found = await anyio.to_thread.run_sync(find)
    if found:
        await writer.apply(Transitions.add_plan(found, None))
    return found
