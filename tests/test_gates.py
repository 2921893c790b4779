"""Jobs that wait for a verdict: the graph's bookkeeping, the SQL guards, verdict ops, and
the engine on the scripted fal (a render gated by a look runs only once it is approved)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from runner.errors import IllegalTransition
from runner.job import JobSpec, job_key, parent_ref
from runner.pipeline._graph import Graph
from runner.plan import JobList
from runner.state import JobState, OutputFile, StateStore, Transitions, Verdicts

from . import states
from .fakefal import ENDPOINT, FakeFal, run_jobs

OUT = OutputFile("a.mp4", "0" * 64, 1, "https://cdn.fake/files/a.mp4", "video")


def _job(name: str, parent: JobSpec | None = None, *, gated: bool = False) -> JobSpec:
    arguments = {"prompt": name, "duration": "5s", "resolution": "540p"}
    if parent is not None:
        arguments["image_url"] = parent_ref(parent.key)
    parents = (parent.key,) if parent else ()
    return JobSpec(
        job_key(ENDPOINT, arguments), ENDPOINT, arguments, f"{name}.mp4", prompt=name,
        estimated_cost=0.5, parents=parents, gates=parents if gated else (),
    )  # fmt: skip


def test_graph_holds_a_gated_job_until_its_parent_is_done_and_approved() -> None:
    """Done alone does not free a gated child; approval does; taking it back before the
    child starts puts it back to wait; after it started, nothing changes."""
    look = _job("look")
    render = _job("render", look, gated=True)
    free = _job("free", look)
    graph = Graph(JobList.of([look, render, free]), {})
    graph.track([0, 1, 2])
    assert graph.awaiting == {1: {look.key}}
    assert graph.done(look.key) == [2], "only the ungated child is ready"
    assert graph.approved(look.key) == [1]
    graph.add_ready([1])
    assert graph.unapproved(look.key) == [1], "taken back from the ready queue"
    assert not graph.has_ready(False)
    assert graph.approved(look.key) == [1]
    graph.add_ready([1])
    assert graph.pop_ready(False) == 1
    assert graph.unapproved(look.key) == [], "started: too late to hold back"
    assert graph.awaiting == {}


def test_an_approved_parent_frees_its_child_at_once() -> None:
    """A parent approved before the run (read from the state) gates nothing."""
    look = _job("look")
    render = _job("render", look, gated=True)
    graph = Graph(JobList.of([look, render]), {look.key: JobState.DONE}, {look.key})
    graph.track([1])
    assert graph.awaiting == {} and graph.waiting == {}


def test_unblock_needs_the_approval_and_verdicts_need_a_done_job(tmp_path: Path) -> None:
    """The unblock statement refuses a gated child until its parent is approved; a verdict
    on a job not done is refused; reblock takes a let-go child back once rejected."""
    look = _job("look")
    render = _job("render", look, gated=True)
    store = StateStore.open(tmp_path / "state.db")
    try:
        states.add(store, [look, render])
        (early,) = store.execute_batch([Verdicts.judge(look.key, "approved", "test")])
        assert isinstance(early, IllegalTransition) and "only a done job" in str(early)
        states.apply(store, states.done(look.key, [OUT]))
        (refused,) = store.execute_batch([Transitions.unblock(render.key)])
        assert isinstance(refused, IllegalTransition)
        states.apply(store, [Verdicts.judge(look.key, "approved", "test")])
        states.apply(store, [Transitions.unblock(render.key)])
        assert store.row(render.key).state is JobState.PENDING  # type: ignore[union-attr]
        (refused,) = store.execute_batch([Transitions.reblock(render.key)])
        assert isinstance(refused, IllegalTransition), "approved: nothing holds it back"
        states.apply(store, [Verdicts.judge(look.key, "rejected", "test")])
        states.apply(store, [Transitions.reblock(render.key)])
        assert store.row(render.key).state is JobState.BLOCKED  # type: ignore[union-attr]
        states.apply(store, [Verdicts.note(look.key, "too dark", "test")])
        judged = store.judgements()[look.key]
        assert (judged.verdict, judged.note) == ("rejected", "too dark")
        history = store.verdict_history(look.key)
        assert [(h["verdict"], h["note"]) for h in history] == [
            ("approved", None),
            ("rejected", None),
            (None, "too dark"),
        ]
        assert store.verdict_mark().last_verdict == 3
    finally:
        store.close()


def test_rerolls_number_takes_after_the_plan_and_each_other(tmp_path: Path) -> None:
    """A reroll needs a rejected job, happens once per job, and numbers its take after the
    plan's highest and every earlier reroll of the group."""
    a, b = _job("a"), _job("b")
    store = StateStore.open(tmp_path / "state.db")
    try:
        states.add(store, [a, b])
        for key, rid in ((a.key, "r1"), (b.key, "r2")):
            states.apply(store, states.done(key, [OUT], request_id=rid))
        (refused,) = store.execute_batch([Verdicts.reroll(a.key, "city/noir", 2)])
        assert isinstance(refused, IllegalTransition), "not rejected"
        for key in (a.key, b.key):
            states.apply(store, [Verdicts.judge(key, "rejected", "test")])
        states.apply(store, [Verdicts.reroll(a.key, "city/noir", 2)])
        states.apply(store, [Verdicts.reroll(b.key, "city/noir", 2)])
        (again,) = store.execute_batch([Verdicts.reroll(a.key, "city/noir", 2)])
        assert isinstance(again, IllegalTransition)
        assert store.extra_takes() == {"city/noir": 4}
        assert [r["take"] for r in store.rerolls()] == [3, 4]
    finally:
        store.close()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_engine_submits_a_gated_job_only_after_its_approval(tmp_path: Path) -> None:
    """On the scripted fal: the look runs, the render waits (the run ends, counting it);
    approved meanwhile in a waiting run, the render is submitted once."""
    look = _job("look")
    render = _job("render", look, gated=True)
    fal = FakeFal()
    summary, store = await run_jobs(tmp_path, fal, [look, render])
    try:
        assert fal.submits == 1 and summary.awaiting_verdict == 1
        assert summary.awaiting_cost == 0.5 and summary.not_started == 0
    finally:
        store.close()

    async def approve_later() -> None:
        await anyio.sleep(0.3)
        writer_store = StateStore.open_beside_runs(tmp_path / "state.db")
        assert writer_store is not None
        try:
            states.apply(writer_store, [Verdicts.judge(look.key, "approved", "test")])
        finally:
            writer_store.close()

    async with anyio.create_task_group() as group:
        group.start_soon(approve_later)
        summary, store = await run_jobs(
            tmp_path, fal, [look, render], verdict_poll=0.1, wait_for_verdicts=True
        )
    try:
        assert fal.submits == 2 and summary.awaiting_verdict == 0
        assert store.row(render.key).state is JobState.DONE  # type: ignore[union-attr]
    finally:
        store.close()
