"""The job graph in the engine: jobs that take other jobs' outputs, local steps, blocked
jobs, failures that block, --retry-failed over a chain, and critical-path ordering.

The engine runs directly on the scripted fal of ``tests/fakefal.py``; the local steps
here are test steps (the user-visible ones come with long footage).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from runner.job import JobSpec, job_key, parent_ref
from runner.pipeline import LocalJob, retry_state
from runner.pipeline._graph import Graph
from runner.plan import JobList
from runner.state import JobState, StateStore, Transitions

from . import states
from .fakefal import ENDPOINT, FakeFal, run_jobs

pytestmark = pytest.mark.anyio

JOIN = "local/join"


@pytest.fixture
def anyio_backend() -> str:
    """Run on asyncio (what the CLI uses)."""
    return "asyncio"


def _join(job: LocalJob) -> None:
    """A test step: the parents' files, one after the other."""
    parts = [Path(p).read_bytes() for p in job.arguments["inputs"]]
    job.output.write_bytes(b"|".join(parts))


def _broken(job: LocalJob) -> None:
    raise ValueError("this step cannot do it")


def _remote(name: str, parents: tuple[str, ...] = (), weight: float = 1.0) -> JobSpec:
    arguments: dict[str, Any] = {"prompt": name, "duration": "5s", "resolution": "540p"}
    if parents:
        arguments["image_url"] = parent_ref(parents[0])
    return JobSpec(
        job_key(ENDPOINT, arguments),
        ENDPOINT,
        arguments,
        f"{name}.mp4",
        prompt=name,
        estimated_cost=0.5,
        parents=parents,
        weight=weight,
    )


def _local(name: str, parents: tuple[str, ...], endpoint: str = JOIN) -> JobSpec:
    arguments = {"inputs": [parent_ref(p) for p in parents]}
    return JobSpec(
        job_key(endpoint, arguments), endpoint, arguments, f"{name}.bin", prompt=name,
        parents=parents,
    )  # fmt: skip


def _states_by_prompt(store: StateStore) -> dict[str | None, JobState]:
    return {row.prompt: row.state for row in store.rows()}


async def test_blocked_jobs_run_once_their_parents_are_done(tmp_path: Path) -> None:
    """Two renders, a local join of their outputs, and a render from the join: each waits
    blocked until its parents are done, then runs; the join's file is uploaded once and
    the render of a render gets fal's own URL back (nothing re-uploaded)."""
    a, b = _remote("a"), _remote("b")
    joined = _local("joined", (a.key, b.key))
    after_join = _remote("after-join", (joined.key,))
    after_a = _remote("after-a", (a.key,))
    fal = FakeFal()
    summary, store = await run_jobs(
        tmp_path, fal, [after_join, joined, after_a, a, b], local_steps={JOIN: _join}
    )
    try:
        assert summary.done == 5 and summary.failed == 0
        assert set(_states_by_prompt(store).values()) == {JobState.DONE}
    finally:
        store.close()
    out = tmp_path / "out"
    assert (out / "joined.bin").read_bytes() == b"video of req-1|video of req-2" or (
        out / "joined.bin"
    ).read_bytes() == b"video of req-2|video of req-1"
    sent = {r.arguments["prompt"]: r.arguments for r in fal.requests.values()}
    assert sent["after-a"]["image_url"].startswith("https://cdn.fake/files/req-")
    assert sent["after-join"]["image_url"].startswith("https://cdn.fake/files/upload-")
    assert fal.calls["upload"] == 1


async def test_a_failed_parent_fails_everything_below_it(tmp_path: Path) -> None:
    """A parent refused by fal: its child and grandchild fail as blocked by it, naming it
    (the failure that caused it all, not the blocked job in between); nothing below it is
    submitted."""
    a = _remote("a")
    child = _local("child", (a.key,))
    grandchild = _remote("grandchild", (child.key,))
    other = _remote("other")
    fal = FakeFal()
    fal.complete_with = ["bad_request"]
    summary, store = await run_jobs(
        tmp_path, fal, [a, child, grandchild, other], local_steps={JOIN: _join}, queue_buffer=0,
        concurrency=1,
    )  # fmt: skip
    try:
        rows = {row.prompt: row for row in store.rows()}
        assert summary.failed == 3 and summary.done == 1
        assert rows["child"].error == "blocked by -/a, which failed"
        assert rows["grandchild"].error == "blocked by -/a, which failed"
        assert fal.submits == 2, "only a and other reached fal"
    finally:
        store.close()


async def test_a_failing_local_step_blocks_its_children(tmp_path: Path) -> None:
    """A local step that raises fails its job (the run goes on) and blocks its children."""
    a = _remote("a")
    broken = _local("broken", (a.key,), "local/broken")
    child = _remote("child", (broken.key,))
    summary, store = await run_jobs(
        tmp_path, FakeFal(), [a, broken, child], local_steps={"local/broken": _broken}
    )
    try:
        rows = {row.prompt: row for row in store.rows()}
        assert rows["broken"].error_class == "LocalStepFailed"
        assert "this step cannot do it" in (rows["broken"].error or "")
        assert rows["child"].error_class == "Blocked" and summary.done == 1
    finally:
        store.close()


async def test_retry_failed_reruns_the_parent_then_its_children(tmp_path: Path) -> None:
    """After a parent failed, --retry-failed puts it back (a new request: fal refused the
    last) and its children back to blocked; the next run renders the chain, and the jobs
    that were done are not touched."""
    a = _remote("a")
    child = _local("child", (a.key,))
    grandchild = _remote("grandchild", (child.key,))
    other = _remote("other")
    jobs = [a, child, grandchild, other]
    fal = FakeFal()
    fal.complete_with = ["bad_request"]
    first, store = await run_jobs(tmp_path, fal, jobs, local_steps={JOIN: _join})
    try:
        assert first.failed == 3
        failed = store.rows_in((JobState.FAILED,))
        targets = {row.prompt: retry_state(row) for row in failed}
        assert targets == {"a": JobState.PENDING, "child": JobState.BLOCKED,
                           "grandchild": JobState.BLOCKED}  # fmt: skip
        states.apply(store, [Transitions.reset(row.key, retry_state(row)) for row in failed])
    finally:
        store.close()
    again, store = await run_jobs(tmp_path, fal, jobs, local_steps={JOIN: _join})
    try:
        assert again.done == 4 and again.failed == 0
        assert fal.submits == 4, "a again, then grandchild; other was done and stays done"
    finally:
        store.close()


async def test_the_longest_chain_starts_first(tmp_path: Path) -> None:
    """Among ready jobs the one with the longest remaining chain goes first, whatever the
    plan order: a three-render chain listed last starts before three single renders."""
    singles = [_remote(f"single-{n}", weight=10.0) for n in range(3)]
    first = _remote("chain-1", weight=10.0)
    second = _remote("chain-2", (first.key,), weight=10.0)
    third = _remote("chain-3", (second.key,), weight=10.0)
    fal = FakeFal()
    summary, store = await run_jobs(
        tmp_path, fal, [*singles, third, second, first], concurrency=1, queue_buffer=0
    )
    store.close()
    assert summary.done == 6
    order = [r.arguments["prompt"] for r in fal.requests.values()]
    assert order[0] == "chain-1", order


def test_critical_path_lengths_add_up_the_heaviest_chain() -> None:
    """A job's priority is its weight plus its heaviest chain of descendants."""
    a, b = _remote("a", weight=2), _remote("b", weight=3)
    c = _remote("c", (a.key,), weight=5)
    d = _local("d", (a.key, b.key))
    e = _remote("e", (c.key,), weight=7)
    graph = Graph(JobList.of([a, b, c, d, e]), {})
    assert graph.priority == [2 + 5 + 7, 3 + 1, 5 + 7, 1, 7]
    assert graph.waiting == {2: {a.key}, 3: {a.key, b.key}, 4: {c.key}}


def test_a_tie_in_remaining_chain_goes_to_the_longer_whole_path() -> None:
    """Two ready renders with the same chain left: the one a longer chain of work led to
    goes first, though it is listed last (plan order used to decide)."""
    single = _remote("single", weight=10)
    first = _remote("first", weight=10)
    last = _remote("last", (first.key,), weight=10)
    graph = Graph(JobList.of([single, first, last]), {first.key: JobState.DONE})
    assert graph.priority[0] == graph.priority[2] == 10
    assert graph.rank(2) > graph.rank(0)
    graph.add_ready([0, 2])
    assert [graph.pop_ready(False), graph.pop_ready(False)] == [2, 0]


async def test_a_resumed_run_unblocks_jobs_whose_parents_finished_before_a_crash(
    tmp_path: Path,
) -> None:
    """A crash between a parent's done and its child's unblock: the next run lets the
    child go (the state had it blocked with every parent done)."""
    a = _remote("a")
    child = _remote("child", (a.key,))
    store = StateStore.open(tmp_path / "state.db")
    try:
        states.add(store, [a, child])
        output = json.loads(json.dumps({"path": "a.mp4", "sha256": "0" * 64, "size": 1,
                                        "url": "https://cdn.fake/files/x.mp4",
                                        "field": "video"}))  # fmt: skip
        from runner.state import OutputFile

        states.apply(store, states.done(a.key, [OutputFile(**output)]))
    finally:
        store.close()
    fal = FakeFal()
    summary, store = await run_jobs(tmp_path, fal, [a, child])
    try:
        assert summary.done == 2 and fal.submits == 1
        sent = next(iter(fal.requests.values())).arguments
        assert sent["image_url"] == "https://cdn.fake/files/x.mp4"
    finally:
        store.close()
