"""The state file: transitions, group commit, locking, results, crash consistency."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path, PurePosixPath

import anyio
import pytest

from runner.errors import ServiceUnavailable, StateError, StateLocked
from runner.job import JobSpec, job_key
from runner.report import write_results
from runner.state import (
    DirectoryLock,
    ErrorInfo,
    OutputFile,
    StateStore,
    StateWriter,
    Transitions,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    """Run async tests on asyncio (the backend the CLI uses)."""
    return "asyncio"


def _spec(n: int) -> JobSpec:
    arguments = {"prompt": f"p{n}", "video_url": "https://example.com/a.mp4"}
    endpoint = "luma/agent/ray/v3.2/video-to-video"
    return JobSpec(
        key=job_key(endpoint, arguments),
        endpoint=endpoint,
        arguments=arguments,
        output=PurePosixPath(f"a/p{n}.mp4"),
        clip="a",
        prompt=f"p{n}",
        estimated_cost=0.72,
    )


def _store(tmp_path: Path, jobs: int = 3) -> tuple[StateStore, list[JobSpec]]:
    store = StateStore.open(tmp_path / "state.db")
    specs = [_spec(n) for n in range(jobs)]
    store.add_jobs(specs)
    return store, specs


async def _apply(store: StateStore, *ops: object) -> None:
    writer = StateWriter(store)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        await writer.apply(*ops)  # type: ignore[arg-type]
        writer.close()


async def test_lifecycle_records_every_transition(tmp_path: Path) -> None:
    """intent → submitted → running → completed → done leaves a full record of the job."""
    store, (spec, *_) = _store(tmp_path)
    await _apply(store, Transitions.intent(spec.key, 1))
    assert store.row(spec.key).state == "submitting"  # type: ignore[union-attr]
    await _apply(
        store,
        Transitions.submitted(spec.key, 1, "req-1", "s", "r", "c"),
        Transitions.running(spec.key),
        Transitions.completed(spec.key, {"video": {"url": "u"}}, 5.0),
        Transitions.done(spec.key, [OutputFile("a/p0.mp4", "ab" * 32, 10, "u", "video")]),
    )
    row = store.row(spec.key)
    assert row is not None
    assert (row.state, row.request_id, row.attempts, row.billable_units) == (
        "done",
        "req-1",
        1,
        5.0,
    )
    assert row.outputs[0]["sha256"] == "ab" * 32
    (attempt,) = store.attempts(spec.key)
    assert attempt["request_id"] == "req-1" and attempt["outcome"] == "completed"


async def test_unchanged_jobs_are_not_reset_by_adding_them_again(tmp_path: Path) -> None:
    """Re-adding a known job (a rerun) keeps its state; a new output path is recorded."""
    store, (spec, *_) = _store(tmp_path)
    await _apply(store, Transitions.intent(spec.key, 1))
    moved = JobSpec(
        spec.key,
        spec.endpoint,
        spec.arguments,
        PurePosixPath("b/x.mp4"),
        clip="a",
        prompt="p0",
        estimated_cost=0.72,
    )
    store.add_jobs([moved])
    row = store.row(spec.key)
    assert row is not None and row.state == "submitting" and row.output == "b/x.mp4"


async def test_retry_with_resubmit_drops_the_request(tmp_path: Path) -> None:
    """A retryable remote failure forgets the request id and returns the job to pending."""
    store, (spec, *_) = _store(tmp_path)
    await _apply(
        store,
        Transitions.intent(spec.key, 1),
        Transitions.submitted(spec.key, 1, "req-1", "s", "r", "c"),
        Transitions.retry(spec.key, ErrorInfo.of(ServiceUnavailable("boom")), resubmit=True),
    )
    row = store.row(spec.key)
    assert row is not None
    assert (row.state, row.request_id, row.error_class) == ("pending", None, "ServiceUnavailable")
    assert store.attempts(spec.key)[0]["outcome"] == "retry: ServiceUnavailable"


async def test_ambiguous_submit_is_counted(tmp_path: Path) -> None:
    """An interrupted submit is counted, and per policy resubmitted or failed."""
    store, (a, b, _) = _store(tmp_path)
    await _apply(store, Transitions.intent(a.key, 1), Transitions.intent(b.key, 1))
    await _apply(
        store,
        Transitions.ambiguous(a.key, resubmit=True),
        Transitions.ambiguous(b.key, resubmit=False),
    )
    row_a, row_b = store.row(a.key), store.row(b.key)
    assert row_a is not None and row_b is not None
    assert (row_a.state, row_a.ambiguous) == ("pending", 1)
    assert (row_b.state, row_b.ambiguous, row_b.error_kind) == ("failed", 1, "ambiguous")


async def test_failed_commit_fails_every_waiter(tmp_path: Path) -> None:
    """A transaction that raises is rolled back, and its error reaches that caller and every
    later one (nothing more is written after a failed commit)."""
    store, (spec, other, _) = _store(tmp_path)

    def broken(conn: object) -> None:
        raise RuntimeError("no")

    writer = StateWriter(store)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        with pytest.raises(RuntimeError, match="no"):
            await writer.apply(Transitions.intent(spec.key, 1), broken)
        with pytest.raises(RuntimeError, match="no"):
            await writer.apply(Transitions.intent(other.key, 1))
        writer.close()
    assert set(store.states().values()) == {"pending"}, "the batch must be all or nothing"


async def test_many_concurrent_writers_are_group_committed(tmp_path: Path) -> None:
    """Hundreds of concurrent transitions all land, in far fewer commits than writes."""
    store, specs = _store(tmp_path, jobs=300)
    commits = 0
    original = store.execute_batch

    def counting(ops: list[object]) -> None:
        nonlocal commits
        commits += 1
        original(ops)  # type: ignore[arg-type]

    store.execute_batch = counting  # type: ignore[method-assign]
    writer = StateWriter(store)
    async with anyio.create_task_group() as tg:
        await tg.start(writer.run)
        async with anyio.create_task_group() as workers:
            for spec in specs:
                workers.start_soon(writer.apply, Transitions.intent(spec.key, 1))
        writer.close()
    assert set(store.states().values()) == {"submitting"}
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
        child.stdout.close()  # type: ignore[union-attr]
    DirectoryLock(tmp_path).acquire()  # the kernel freed it with the process


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A state file from a newer raybatch is refused rather than misread."""
    store, _ = _store(tmp_path)
    store.set_meta("schema_version", "99")
    store.close()
    with pytest.raises(StateError, match="newer raybatch"):
        StateStore.open(tmp_path / "state.db")


def test_damaged_state_file_is_refused(tmp_path: Path) -> None:
    """A state file that is not a database gives a StateError, not a traceback."""
    (tmp_path / "state.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StateError):
        StateStore.open(tmp_path / "state.db")


async def test_results_jsonl_lists_finished_jobs_only(tmp_path: Path) -> None:
    """results.jsonl has one line per finished job with its outputs and error."""
    store, (a, b, c) = _store(tmp_path)
    await _apply(
        store,
        Transitions.done(a.key, [OutputFile("a/p0.mp4", "00" * 32, 3, "u", "video")]),
        Transitions.failed(b.key, ErrorInfo("permanent", "InputRejected", "prompt: too long")),
    )
    count = write_results(store, tmp_path / "results.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert count == 2 and [x["status"] for x in lines] == ["done", "failed"]
    assert lines[0]["outputs"][0]["path"] == "a/p0.mp4" and lines[0]["error"] is None
    assert lines[1]["error"]["class"] == "InputRejected"
    assert c.key not in {x["key"] for x in lines}
