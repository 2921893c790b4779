"""The offline demo is resumable: Ctrl-C on `run --local` (once: drain; twice: leave the
requests at the built-in emulator), then `run --local` again, finishes every job without
a failure or a second submission; SIGKILL leaves no emulator behind."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from .conftest import count_rows, run_cli, spawn_cli

JOBS = 9


def _run_local(demo: Path, out: Path) -> subprocess.Popen[str]:
    """`run --local` in the background as a terminal's foreground job (its own group)."""
    args = ("run", demo, "--local", "--output-dir", out)
    return spawn_cli(*args, cwd=out.parent, key=None, own_group=True)


def _wait_until_at_fal(out: Path, jobs: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    sql = "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"
    while count_rows(out / "state.db", sql) < jobs:
        assert time.monotonic() < deadline, "no job reached the emulator"
        time.sleep(0.05)


def _emulator_requests(out: Path) -> list[dict[str, object]]:
    """The requests the built-in emulator kept in its state directory."""
    conn = sqlite3.connect(out / ".emulator" / "state.db")
    try:
        return [json.loads(r) for (r,) in conn.execute("SELECT record FROM jobs")]
    finally:
        conn.close()


@pytest.mark.parametrize("presses", [1, 2], ids=["ctrl-c", "ctrl-c-twice"])
def test_ctrl_c_on_run_local_then_run_again_finishes_without_resubmitting(
    demo: Path, tmp_path: Path, presses: int
) -> None:
    """Ctrl-C reaches the runner only: once, it drains against an emulator still there;
    twice, it leaves requests at the emulator, which keeps them under the output dir. The
    next `run --local` re-attaches: every job done, none failed, each input submitted once."""
    out = tmp_path / "out"
    runner = spawn_cli(
        "run", demo, "--local", "--output-dir", out, cwd=tmp_path, key=None, own_group=True
    )
    try:
        _wait_until_at_fal(out, 2)
        emulators = psutil.Process(runner.pid).children(recursive=True)
        assert emulators, "run --local started no emulator"
        for press in range(presses):
            if press:
                time.sleep(0.3)
            os.killpg(runner.pid, signal.SIGINT)
        _, err = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.communicate()
    assert runner.returncode == 130, err
    assert "submitting nothing new" in err
    left = count_rows(out / "state.db", "SELECT count(*) FROM jobs WHERE state = 'done'")
    if presses == 1:
        assert "refusing" not in err and "failed 0" in err
    psutil.wait_procs(emulators, timeout=30)
    assert not any(p.is_running() for p in emulators), "the emulator outlived its runner"

    again = run_cli("run", demo, "--local", "--output-dir", out, key=None, timeout=180)
    assert again.returncode == 0, again.stderr
    assert "UnsafeOutput" not in again.stderr and "refusing" not in again.stderr
    db = out / "state.db"
    assert count_rows(db, "SELECT count(*) FROM jobs WHERE state = 'done'") == JOBS
    assert count_rows(db, "SELECT sum(ambiguous) FROM jobs") == 0
    requests = _emulator_requests(out)
    assert len(requests) == JOBS, "a job was submitted twice"
    assert len({r["input_sha256"] for r in requests}) == JOBS
    if presses == 2:
        assert left < JOBS, "the second Ctrl-C left nothing at the emulator to re-attach to"


def test_sigkill_on_run_local_leaves_no_emulator_and_resumes(demo: Path, tmp_path: Path) -> None:
    """kill -9 of the runner: its emulator notices (its stdin closes) and exits; the next
    `run --local` finishes every job, paying only for the counted ambiguous submits."""
    out = tmp_path / "out"
    runner = spawn_cli(
        "run", demo, "--local", "--output-dir", out, cwd=tmp_path, key=None, own_group=True
    )
    try:
        _wait_until_at_fal(out, 2)
        emulators = psutil.Process(runner.pid).children(recursive=True)
        assert emulators
    finally:
        runner.send_signal(signal.SIGKILL)
        runner.communicate()
    gone, alive = psutil.wait_procs(emulators, timeout=30)
    assert not alive, f"emulator left running: {[p.pid for p in alive]}"
    again = run_cli("run", demo, "--local", "--output-dir", out, key=None, timeout=180)
    assert again.returncode == 0, again.stderr
    db = out / "state.db"
    assert count_rows(db, "SELECT count(*) FROM jobs WHERE state = 'done'") == JOBS
    ambiguous = count_rows(db, "SELECT sum(ambiguous) FROM jobs")
    requests = _emulator_requests(out)
    assert len({r["input_sha256"] for r in requests}) == JOBS
    assert len(requests) <= JOBS + ambiguous
