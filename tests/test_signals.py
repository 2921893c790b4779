"""Ctrl-C, a second Ctrl-C, `cancel`, `--retry-failed` and two runs on one directory."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import (
    Emulator,
    run_cli,
    spawn_cli,
    start_emulator,
    stop_emulator,
    wait_for_stats,
)

JOBS = 9


@pytest.fixture
def slow_emulator() -> Iterator[Emulator]:
    """An emulator whose jobs take a few seconds, so a run can be caught mid-way."""
    emu = start_emulator("--synthetic", "--job-seconds", "2:3", "--seed", "3")
    try:
        yield emu
    finally:
        stop_emulator(emu)


def _states(out: Path) -> dict[str, int]:
    db = sqlite3.connect(out / "state.db")
    try:
        return dict(db.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
    finally:
        db.close()


def _finish(runner: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    out, err = runner.communicate(timeout=timeout)
    return out, err


def test_first_signal_drains_in_flight_jobs_and_submits_nothing_new(
    demo: Path, tmp_path: Path, slow_emulator: Emulator
) -> None:
    """SIGINT: no new submission, every request already at fal is finished and downloaded,
    state flushed, exit 130; the next run does the rest."""
    out = tmp_path / "out"
    runner = spawn_cli(
        "run", demo, "--fal-url", slow_emulator.url, "--output-dir", out, cwd=tmp_path
    )
    wait_for_stats(slow_emulator, lambda s: s["submits"] >= 3)
    runner.send_signal(signal.SIGINT)
    _, err = _finish(runner)
    assert runner.returncode == 130, err
    submitted = slow_emulator.stats()["submits"]
    states = _states(out)
    assert submitted < JOBS
    assert states.get("done") == submitted, (states, submitted)
    assert states.get("pending") == JOBS - submitted
    assert "submitting nothing new" in err
    again = run_cli("run", demo, "--fal-url", slow_emulator.url, "--output-dir", out)
    assert again.returncode == 0, again.stderr
    assert slow_emulator.stats()["submits"] == JOBS


def test_second_signal_leaves_requests_reattachable(
    demo: Path, tmp_path: Path, slow_emulator: Emulator
) -> None:
    """A second SIGINT exits at once; the requests it left at fal are picked up, not paid
    for again, by the next run."""
    out = tmp_path / "out"
    runner = spawn_cli(
        "run", demo, "--fal-url", slow_emulator.url, "--output-dir", out, cwd=tmp_path
    )
    wait_for_stats(slow_emulator, lambda s: s["submits"] >= 4)
    runner.send_signal(signal.SIGINT)
    time.sleep(0.2)
    runner.send_signal(signal.SIGINT)
    _finish(runner, timeout=15)
    assert runner.returncode == 130
    states = _states(out)
    assert states.get("queued", 0) + states.get("running", 0) >= 1, states
    again = run_cli("run", demo, "--fal-url", slow_emulator.url, "--output-dir", out)
    assert again.returncode == 0, again.stderr
    stats = slow_emulator.stats()
    assert stats["submits"] == stats["distinct_inputs"] == JOBS


def test_cancel_cancels_remote_requests_and_retry_failed_runs_them_again(
    demo: Path, tmp_path: Path, slow_emulator: Emulator
) -> None:
    """`cancel` asks fal to cancel in-flight requests and marks them cancelled; a plain run
    leaves them alone; `run --retry-failed` renders them again."""
    out = tmp_path / "out"
    runner = spawn_cli(
        "run", demo, "--fal-url", slow_emulator.url, "--output-dir", out, cwd=tmp_path
    )
    wait_for_stats(slow_emulator, lambda s: s["submits"] >= 4)
    runner.send_signal(signal.SIGKILL)
    _finish(runner)
    in_flight = _states(out).get("queued", 0) + _states(out).get("running", 0)
    cancel = run_cli("cancel", demo, "--fal-url", slow_emulator.url, "--output-dir", out)
    assert cancel.returncode == 0, cancel.stderr
    stats = slow_emulator.stats()
    assert stats["cancels"] == in_flight
    cancelled = _states(out).get("cancelled", 0)
    assert cancelled >= 1 and "marked cancelled" in cancel.stdout
    plain = run_cli("run", demo, "--fal-url", slow_emulator.url, "--output-dir", out)
    assert plain.returncode == 1
    assert _states(out).get("cancelled") == cancelled
    retry = run_cli(
        "run", demo, "--fal-url", slow_emulator.url, "--output-dir", out, "--retry-failed"
    )
    assert retry.returncode == 0, retry.stderr
    assert _states(out) == {"done": JOBS}


def test_retry_failed_reruns_only_failed_jobs(demo: Path, tmp_path: Path) -> None:
    """A job that failed stays failed on a plain rerun; --retry-failed submits just it."""
    emulator = start_emulator(
        "--synthetic", "--job-seconds", "0.2:0.3", "--faults", "submit#1=validation"
    )
    try:
        out = tmp_path / "out"
        first = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
        assert first.returncode == 1
        assert _states(out) == {"done": JOBS - 1, "failed": 1}
        plain = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
        assert plain.returncode == 1 and emulator.stats()["submits"] == JOBS
        retry = run_cli(
            "run", demo, "--fal-url", emulator.url, "--output-dir", out, "--retry-failed"
        )
        assert retry.returncode == 0, retry.stderr
        assert emulator.stats()["submits"] == JOBS + 1
        lines = (out / "results.jsonl").read_text().splitlines()
        assert [json.loads(x)["status"] for x in lines].count("done") == JOBS
    finally:
        stop_emulator(emulator)


def test_second_run_on_the_same_directory_is_refused(
    demo: Path, tmp_path: Path, slow_emulator: Emulator
) -> None:
    """While one run holds an output directory, another is refused with a clear message."""
    out = tmp_path / "out"
    runner = spawn_cli(
        "run", demo, "--fal-url", slow_emulator.url, "--output-dir", out, cwd=tmp_path
    )
    try:
        wait_for_stats(slow_emulator, lambda s: s["submits"] >= 1)
        second = run_cli("run", demo, "--fal-url", slow_emulator.url, "--output-dir", out)
        assert second.returncode == 3
        assert "in use by another raybatch run" in second.stderr
        assert f"pid {runner.pid}" in second.stderr
    finally:
        runner.send_signal(signal.SIGKILL)
        _finish(runner)
