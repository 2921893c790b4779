"""Superseded outputs are kept: an edited prompt's new render takes the output path, the
old (paid) one moves to `.superseded/<key>/`, stays in results.jsonl and in spend, and
comes back when the edit is undone. A clip gone during a run is a local error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from runner.job import JobSpec
from runner.state import JobState, StateStore, Transitions, open_writer

from .conftest import Emulator, run_cli, spawn_cli, start_emulator, stop_emulator, wait_for_stats

JOBS = 9
SEPIA = ("soft film grain", "heavy film grain")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


def test_an_edited_prompt_keeps_the_paid_render_and_an_undo_brings_it_back(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """Edit: the old files move aside (same bytes), results.jsonl lists them with
    superseded_by, spend counts both renders. Undo: the old files return to their paths,
    the edited ones go aside, and nothing is submitted."""
    out = tmp_path / "out"
    assert run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out).returncode == 0
    first = {p.parent.name: _sha256(p) for p in out.glob("*/sepia.mp4")}
    assert len(first) == 3
    spent = json.loads(run_cli("status", demo, "--output-dir", out, "--json").stdout)

    demo.write_text(demo.read_text().replace(*SEPIA))
    edited = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    assert edited.returncode == 0, edited.stderr
    assert emulator.stats()["submits"] == JOBS + 3
    superseded = [r for r in _records(out) if r["superseded_by"]]
    assert len(superseded) == 3
    current = {r["key"]: r for r in _records(out) if not r["superseded_by"]}
    assert len(current) == JOBS
    for record in superseded:
        assert record["status"] == "done" and record["spend"] > 0
        assert record["superseded_by"] in current
        (output,) = record["outputs"]
        path = Path(output["path"])
        assert path.parts[:2] == (".superseded", record["key"])
        clip = path.parent.name
        assert _sha256(out / path) == first[clip], "the paid render is kept, byte for byte"
        newer = current[str(record["superseded_by"])]
        assert [o["path"] for o in newer["outputs"]] == [f"{clip}/sepia.mp4"]
        assert (out / clip / "sepia.mp4").stat().st_size == newer["outputs"][0]["size"]
    status = json.loads(run_cli("status", demo, "--output-dir", out, "--json").stdout)
    assert status["jobs"] == JOBS and status["total"] == {"done": JOBS}
    assert status["paid_submissions"] == JOBS + 3
    assert status["estimated_spend"] == pytest.approx(spent["estimated_spend"] * 12 / 9)

    demo.write_text(demo.read_text().replace(SEPIA[1], SEPIA[0]))
    undone = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    assert undone.returncode == 0, undone.stderr
    assert emulator.stats()["submits"] == JOBS + 3, "an undone edit renders nothing"
    assert {p.parent.name: _sha256(p) for p in out.glob("*/sepia.mp4")} == first
    aside = sorted(p.relative_to(out) for p in (out / ".superseded").rglob("*.mp4"))
    assert len(aside) == 3
    keys_now_aside = {p.parts[1] for p in aside}
    assert keys_now_aside == {r["key"] for r in _records(out) if r["superseded_by"]}
    assert keys_now_aside.isdisjoint(r["key"] for r in superseded)


def test_adding_a_plan_marks_superseded_jobs_and_unmarks_returning_ones(tmp_path: Path) -> None:
    """State level: a job whose output path a new plan job takes is superseded by it; the
    plan job itself, if it had been superseded, is no longer; the move is asked for."""
    old = JobSpec("a" * 64, "e/p", {"prompt": "x"}, "city/sepia.mp4")
    new = JobSpec("b" * 64, "e/p", {"prompt": "y"}, "city/sepia.mp4")
    other = JobSpec("c" * 64, "e/p", {"prompt": "z"}, "city/noir.mp4")

    async def check(store: StateStore) -> None:
        async with open_writer(store) as writer:
            await writer.apply(Transitions.add_plan([old, other], "one"))
            assert store.outputs_to_move() is None, "nothing superseded: no move to make"
            await writer.apply(Transitions.add_plan([new, other], "two"))
            assert store.outputs_to_move() == ({}, {}), "asked for (nothing done to move)"
            await writer.apply(Transitions.moves_done())
            assert store.outputs_to_move() is None
            rows = {r.key: r for r in store.rows()}
            assert rows[old.key].superseded_by == new.key
            assert rows[new.key].superseded_by is None and rows[other.key].superseded_by is None
            await writer.apply(Transitions.add_plan([old, other], "one"))
            rows = {r.key: r for r in store.rows()}
            assert rows[new.key].superseded_by == old.key
            assert rows[old.key].superseded_by is None
            assert rows[old.key].state is JobState.PENDING
            assert store.outputs_to_move() == ({}, {}), "a returning job asks for its files"

    store = StateStore.open(tmp_path / "state.db")
    try:
        anyio.run(check, store)
    finally:
        store.close()


def test_a_clip_deleted_during_a_run_is_a_local_error(demo: Path, tmp_path: Path) -> None:
    """The upload of a clip deleted after planning fails as a local read error naming the
    file (nothing sent to fal), status says what to do, and putting it back then
    --retry-failed renders its jobs."""
    emulator = start_emulator("--synthetic", "--job-seconds", "1:1.5", "--max-running", "1")
    try:
        out = tmp_path / "out"
        forest = demo.parent / "media" / "forest.mp4"
        kept = forest.read_bytes()
        args = ("run", demo, "--fal-url", emulator.url, "--output-dir", out)
        runner = spawn_cli(*args, "--concurrency", "1", cwd=tmp_path)
        wait_for_stats(emulator, lambda s: s["submits"] >= 1)
        forest.unlink()
        _, err = runner.communicate(timeout=120)
        assert runner.returncode == 1, err
        status = run_cli("status", demo, "--output-dir", out, "--json")
        failures = json.loads(status.stdout)["failures"]
        assert len(failures) == 1, failures
        (group,) = failures
        assert group["class"] == "LocalFileError" and group["count"] == 3
        assert str(forest) in group["reason"] and "local file" in group["reason"]
        assert "nothing was sent to fal" in group["reason"]
        assert {j["clip"] for j in group["jobs"]} == {"forest"}
        assert "put it back" in group["advice"]
        assert emulator.stats()["submits"] == JOBS - 3

        forest.write_bytes(kept)
        retry = run_cli(*args, "--retry-failed")
        assert retry.returncode == 0, retry.stderr
        assert emulator.stats()["submits"] == JOBS
    finally:
        stop_emulator(emulator)
