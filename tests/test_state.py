"""The state file: guarded transitions, spend, group commit, locking, results."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
import pytest

from runner.errors import IllegalTransition, ServiceUnavailable, StateError, StateLocked
from runner.job import JobSpec, job_key, parent_ref
from runner.report import write_results
from runner.state import (
    DirectoryLock,
    ErrorInfo,
    JobState,
    OutputFile,
    StateStore,
    StateWriter,
    Transitions,
    open_writer,
)

from . import states

pytestmark = pytest.mark.anyio

S = JobState
OUT = OutputFile("a/p0.mp4", "ab" * 32, 10, "u", "video")


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the backend the CLI uses)."""
    return "asyncio"


def _spec(n: int, parents: tuple[str, ...] = ()) -> JobSpec:
    arguments: dict[str, object] = {"prompt": f"p{n}", "video_url": "https://example.com/a.mp4"}
    if parents:
        arguments["start_image_url"] = parent_ref(parents[0])
    endpoint = "luma/agent/ray/v3.2/video-to-video"
    return JobSpec(
        key=job_key(endpoint, arguments),
        endpoint=endpoint,
        arguments=arguments,
        output=f"a/p{n}.mp4",
        clip="a",
        prompt=f"p{n}",
        estimated_cost=0.72,
        parents=parents,
    )


def _store(tmp_path: Path, jobs: int = 3) -> tuple[StateStore, list[JobSpec]]:
    store = StateStore.open(tmp_path / "state.db")
    specs = [_spec(n) for n in range(jobs)]
    states.add(store, specs)
    return store, specs


async def _apply(store: StateStore, *ops: states.Op) -> None:
    async with open_writer(store) as writer:
        await writer.apply(*ops)


def _state(store: StateStore, key: str) -> JobState:
    row = store.row(key)
    assert row is not None
    return row.state


async def test_lifecycle_records_every_transition(tmp_path: Path) -> None:
    """intent → submitted → running → completed → done leaves a full record of the job."""
    store, (spec, *_) = _store(tmp_path)
    await _apply(store, Transitions.intent(spec.key, 1, 0.72))
    assert _state(store, spec.key) is S.SUBMITTING
    await _apply(
        store,
        Transitions.submitted(spec.key, "req-1", "s", "r", "c"),
        Transitions.running(spec.key),
        Transitions.completed(spec.key, {"video": {"url": "u"}}, 5.0),
        Transitions.done(spec.key, [OUT]),
    )
    row = store.row(spec.key)
    assert row is not None
    assert (row.state, row.request_id, row.attempts, row.billable_units) == (
        S.DONE,
        "req-1",
        1,
        5.0,
    )
    assert row.outputs[0]["sha256"] == "ab" * 32
    (attempt,) = store.attempts(spec.key)
    assert attempt["request_id"] == "req-1" and attempt["outcome"] == "completed"
    assert attempt["billing"] == "accepted" and attempt["billable_units"] == 5.0


@pytest.mark.parametrize(
    ("setup", "illegal"),
    [
        ([], lambda k: Transitions.running(k)),
        ([], lambda k: Transitions.done(k, [OUT])),
        ([], lambda k: Transitions.completed(k, {}, None)),
        (["intent"], lambda k: Transitions.intent(k, 2, 0.72)),
        (["intent", "submitted"], lambda k: Transitions.unsent(k)),
        (["intent", "submitted"], lambda k: Transitions.reset(k, JobState.PENDING)),
    ],
    ids=["running-from-pending", "remote-done-from-pending", "completed-from-pending",
         "second-intent", "unsent-after-accepted", "reset-unfinished"],
)  # fmt: skip
async def test_illegal_transitions_raise_and_change_nothing(
    tmp_path: Path, setup: list[str], illegal: object
) -> None:
    """A transition from a state it does not start from raises; the job is untouched and the
    other ops of the same batch still commit."""
    store, (spec, other, _) = _store(tmp_path)
    before: list[states.Op] = []
    if "intent" in setup:
        before.append(Transitions.intent(spec.key, 1, 0.72))
    if "submitted" in setup:
        before.append(Transitions.submitted(spec.key, "r1", "s", "r", "c"))
    if before:
        await _apply(store, *before)
    row_before = store.row(spec.key)
    async with open_writer(store) as writer, anyio.create_task_group() as group:
        group.start_soon(writer.apply, Transitions.intent(other.key, 1, 0.72))
        with pytest.raises(IllegalTransition, match=spec.key[:12]):
            await writer.apply(illegal(spec.key))  # type: ignore[operator]
    assert store.row(spec.key) == row_before
    assert _state(store, other.key) is S.SUBMITTING


async def test_unblock_needs_every_parent_done(tmp_path: Path) -> None:
    """A child is added blocked; unblocking it is refused until every parent is done."""
    store, (first, second, _) = _store(tmp_path)
    child = _spec(9, parents=(first.key, second.key))
    states.add(store, [child])
    assert _state(store, child.key) is S.BLOCKED
    await _apply(store, *states.done(first.key, [OUT]))
    with pytest.raises(IllegalTransition):
        await _apply(store, Transitions.unblock(child.key))
    await _apply(store, *states.done(second.key, [OUT], request_id="req-2"))
    await _apply(store, Transitions.unblock(child.key))
    assert _state(store, child.key) is S.PENDING
    assert sorted(store.edges()) == sorted([(child.key, first.key), (child.key, second.key)])


async def test_blocked_by_fails_the_child_naming_its_parent(tmp_path: Path) -> None:
    """A parent's failure fails its blocked child with a reason that names the parent."""
    store, (parent, *_) = _store(tmp_path)
    child = _spec(9, parents=(parent.key,))
    states.add(store, [child])
    await _apply(store, Transitions.blocked_by(child.key, "a/p0"))
    row = store.row(child.key)
    assert row is not None and row.state is S.FAILED
    assert (row.error_class, row.error) == ("Blocked", "blocked by a/p0, which failed")


async def test_resubmit_drops_the_request_but_keeps_its_attempt_paid(tmp_path: Path) -> None:
    """A new paid request forgets the old request id; the old attempt stays in spend."""
    store, (spec, *_) = _store(tmp_path)
    await _apply(
        store,
        *states.submitted(spec.key, "req-1"),
        Transitions.resubmit(spec.key, ErrorInfo.of(ServiceUnavailable("boom"))),
    )
    row = store.row(spec.key)
    assert row is not None
    assert (row.state, row.request_id, row.error_class) == (S.PENDING, None, "ServiceUnavailable")
    assert store.attempts(spec.key)[0]["outcome"] == "resubmitted: ServiceUnavailable"
    assert store.spend().usd == 0.72


async def test_spend_is_the_sum_of_every_paid_attempt(tmp_path: Path) -> None:
    """Spend counts accepted and ambiguous attempts of done, failed and cancelled jobs; a
    refused POST and an attempt fal billed zero units for are free."""
    store, (a, b, c) = _store(tmp_path, jobs=3)
    d = _spec(3)
    states.add(store, [d])
    await _apply(
        store,
        *states.done(a.key, [OUT], request_id="ra"),  # paid
        Transitions.intent(b.key, 1, 0.72),
        Transitions.unsent(b.key),  # refused: free
        Transitions.intent(b.key, 1, 0.72),
        Transitions.ambiguous(b.key, resubmit=True),  # may have been billed
        Transitions.intent(b.key, 2, 0.72),
        Transitions.submitted(b.key, "rb", "s", "r", "c"),
        Transitions.failed(b.key, ErrorInfo("permanent", "RequestRefused", "no")),
        *states.submitted(c.key, "rc"),
        Transitions.cancelled(c.key, "cancelled by the user"),
        *states.submitted(d.key, "rd"),
        Transitions.completed(d.key, {"video": {"url": "u"}}, 0.0),  # fal billed nothing
    )
    spend = store.spend()
    assert spend.usd == pytest.approx(0.72 * 4)
    assert (spend.paid_attempts, spend.resubmitted, spend.ambiguous) == (5, 1, 1)
    usd, paid = store.spend_by_job()[b.key]
    assert usd == pytest.approx(1.44) and paid == 2


async def test_reset_goes_where_it_is_told(tmp_path: Path) -> None:
    """--retry-failed's reset keeps the request to re-attach to, or drops it to pay anew."""
    store, (a, b, _) = _store(tmp_path)
    error = ErrorInfo("retryable", "ServiceUnavailable", "down")
    await _apply(
        store,
        *states.submitted(a.key, "ra"),
        Transitions.failed(a.key, error),
        *states.submitted(b.key, "rb"),
        Transitions.failed(b.key, error),
    )
    await _apply(store, Transitions.reset(a.key, S.QUEUED), Transitions.reset(b.key, S.PENDING))
    row_a, row_b = store.row(a.key), store.row(b.key)
    assert row_a is not None and row_b is not None
    assert (row_a.state, row_a.request_id) == (S.QUEUED, "ra")
    assert (row_b.state, row_b.request_id) == (S.PENDING, None)


async def test_unchanged_jobs_are_not_reset_by_adding_them_again(tmp_path: Path) -> None:
    """Re-adding a known job (a rerun) keeps its state; a new output path is recorded."""
    store, (spec, *_) = _store(tmp_path)
    await _apply(store, Transitions.intent(spec.key, 1, 0.72))
    moved = JobSpec(
        spec.key,
        spec.endpoint,
        spec.arguments,
        "b/x.mp4",
        clip="a",
        prompt="p0",
        estimated_cost=0.72,
    )
    states.add(store, [moved])
    row = store.row(spec.key)
    assert row is not None and row.state is S.SUBMITTING and row.output == "b/x.mp4"


async def test_ambiguous_submit_is_counted(tmp_path: Path) -> None:
    """An interrupted submit is counted, and per policy resubmitted or failed."""
    store, (a, b, _) = _store(tmp_path)
    await _apply(store, Transitions.intent(a.key, 1, 0.72), Transitions.intent(b.key, 1, 0.72))
    await _apply(
        store,
        Transitions.ambiguous(a.key, resubmit=True),
        Transitions.ambiguous(b.key, resubmit=False),
    )
    row_a, row_b = store.row(a.key), store.row(b.key)
    assert row_a is not None and row_b is not None
    assert (row_a.state, row_a.ambiguous) == (S.PENDING, 1)
    assert (row_b.state, row_b.ambiguous, row_b.error_kind) == (S.FAILED, 1, "ambiguous")


async def test_failed_commit_fails_every_waiter(tmp_path: Path) -> None:
    """A transaction that raises is rolled back, and its error reaches that caller and every
    later one (nothing more is written after a failed commit)."""
    store, (spec, other, _) = _store(tmp_path)

    def broken(conn: object) -> None:
        raise RuntimeError("no")

    async with open_writer(store) as writer:
        with pytest.raises(RuntimeError, match="no"):
            await writer.apply(Transitions.intent(spec.key, 1, 0.72), broken)
        with pytest.raises(RuntimeError, match="no"):
            await writer.apply(Transitions.intent(other.key, 1, 0.72))
    assert set(store.states().values()) == {S.PENDING}, "the batch must be all or nothing"


async def test_many_concurrent_writers_are_group_committed(tmp_path: Path) -> None:
    """Hundreds of concurrent transitions all land, in far fewer commits than writes."""
    store, specs = _store(tmp_path, jobs=300)
    commits = 0
    original = store.execute_batch

    def counting(ops: Sequence[states.Op]) -> list[IllegalTransition | None]:
        nonlocal commits
        commits += 1
        return original(ops)

    store.execute_batch = counting  # type: ignore[method-assign]
    async with open_writer(store) as writer, anyio.create_task_group() as workers:
        for spec in specs:
            workers.start_soon(writer.apply, Transitions.intent(spec.key, 1, 0.72))
    assert set(store.states().values()) == {S.SUBMITTING}
    assert commits < len(specs) / 2


def test_state_file_is_owner_only(tmp_path: Path) -> None:
    """state.db is created readable and writable by its owner only."""
    store, _ = _store(tmp_path)
    store.close()
    assert stat.S_IMODE(os.stat(tmp_path / "state.db").st_mode) == 0o600


def test_second_lock_is_refused(tmp_path: Path) -> None:
    """A second holder of the output directory is refused with a clear message."""
    with DirectoryLock(tmp_path), pytest.raises(StateLocked, match="in use by another raybatch"):
        DirectoryLock(tmp_path).acquire()
    with DirectoryLock(tmp_path):
        pass  # released: free again


def test_lock_held_by_another_process_is_refused(tmp_path: Path) -> None:
    """The lock works across processes, not just within one."""
    code = (
        "import sys, time; from pathlib import Path; from runner.state import DirectoryLock;"
        "l = DirectoryLock(Path(sys.argv[1])); l.acquire(); print('locked', flush=True);"
        "time.sleep(30)"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "locked"
        with pytest.raises(StateLocked, match=f"pid {child.pid}"):
            DirectoryLock(tmp_path).acquire()
    finally:
        child.kill()
        child.wait()
        assert child.stdout is not None
        child.stdout.close()
    DirectoryLock(tmp_path).acquire()  # the kernel freed it with the process


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A state file from a newer raybatch is refused rather than misread, by writers and
    readers alike."""
    store, _ = _store(tmp_path)

    def newer(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")

    store.execute_batch([newer])
    store.close()
    with pytest.raises(StateError, match="newer raybatch"):
        StateStore.open(tmp_path / "state.db")
    with pytest.raises(StateError, match="newer raybatch"):
        StateStore.open_readonly(tmp_path / "state.db")


def test_damaged_state_file_is_refused(tmp_path: Path) -> None:
    """A state file that is not a database gives a StateError, not a traceback."""
    (tmp_path / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError):
        StateStore.open(tmp_path / "state.db")


async def test_results_jsonl_lists_finished_jobs_with_their_spend(tmp_path: Path) -> None:
    """results.jsonl has one line per finished job with its outputs, error and spend."""
    store, (a, b, c) = _store(tmp_path)
    await _apply(
        store,
        *states.done(a.key, [OutputFile("a/p0.mp4", "00" * 32, 3, "u", "video")]),
        *states.submitted(b.key, "rb"),
        Transitions.failed(b.key, ErrorInfo("permanent", "InputRejected", "prompt: too long")),
    )
    count = write_results(store, tmp_path / "results.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert count == 2 and [x["status"] for x in lines] == ["done", "failed"]
    assert lines[0]["outputs"][0]["path"] == "a/p0.mp4" and lines[0]["error"] is None
    assert lines[1]["error"]["class"] == "InputRejected"
    assert [x["spend"] for x in lines] == [0.72, 0.72], "a failed, paid job still counts"
    assert sum(x["spend"] for x in lines) == pytest.approx(store.spend().usd)
    assert c.key not in {x["key"] for x in lines}


async def test_an_interrupted_results_write_leaves_the_old_file_and_no_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Ctrl-C while results.jsonl is rewritten leaves the previous file whole and no
    results.jsonl.tmp. (The interrupt is raised from inside the write: a real second
    Ctrl-C cannot be timed to land there.)"""
    import runner.report._results as results

    store, (a, b, _) = _store(tmp_path)
    await _apply(store, *states.done(a.key, [OUT]), *states.done(b.key, [OUT]))
    path = tmp_path / "results.jsonl"
    write_results(store, path)
    before = path.read_bytes()
    calls = 0
    record = results.result_record

    def interrupted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise KeyboardInterrupt
        return record(*args, **kwargs)

    monkeypatch.setattr(results, "result_record", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_results(store, path)
    assert path.read_bytes() == before
    assert not (tmp_path / "results.jsonl.tmp").exists()


def test_writer_is_the_only_way_in(tmp_path: Path) -> None:
    """StateWriter batches ops from a task group (a smoke test of its public surface)."""
    store, (spec, *_) = _store(tmp_path)

    async def main() -> None:
        writer = StateWriter(store)
        async with anyio.create_task_group() as group:
            await group.start(writer.run)
            await writer.apply(Transitions.intent(spec.key, 1, 0.72))
            writer.close()

    anyio.run(main)
    assert _state(store, spec.key) is S.SUBMITTING
    assert PurePosixPath(store.row(spec.key).output) == PurePosixPath("a/p0.mp4")  # type: ignore[union-attr]
