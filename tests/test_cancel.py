"""`raybatch cancel` while a run goes on: the running process cancels, fal's best effort
is recorded as it turns out (a queued request dropped and unbilled, a running one finished,
billed and downloaded), and `status` agrees with what the emulator billed."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    Emulator,
    count_rows,
    run_cli,
    spawn_cli,
    start_emulator,
    stop_emulator,
    wait_for_stats,
)

JOBS = 9


@pytest.fixture
def two_slot_emulator() -> Iterator[Emulator]:
    """An account running two requests at once, each for a few seconds: a run of the demo
    has two requests running at fal, more queued there, and the rest not yet submitted."""
    emu = start_emulator("--synthetic", "--job-seconds", "4:5", "--max-running", "2")
    try:
        yield emu
    finally:
        stop_emulator(emu)


def _run_in_background(demo: Path, emu: Emulator, out: Path) -> subprocess.Popen[str]:
    """`run` of the demo on two slots, started in the background."""
    args = ("run", demo, "--fal-url", emu.url, "--output-dir", out, "--concurrency", "2")
    return spawn_cli(*args, cwd=out.parent)


def _rows(out: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(out / "state.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_cancel_while_running_bills_what_ran_and_keeps_its_output(
    demo: Path, tmp_path: Path, two_slot_emulator: Emulator
) -> None:
    """Cancel during a run: the run does it; running requests finish, bill and are
    downloaded (done, spend counted); queued ones are dropped unbilled; unsubmitted ones
    are cancelled; status, results.jsonl and the emulator agree on the spend."""
    emu = two_slot_emulator
    out = tmp_path / "out"
    runner = _run_in_background(demo, emu, out)
    try:
        wait_for_stats(emu, lambda s: s["running"] == 2 and s["queued"] >= 1)
        cancel = run_cli("cancel", demo, "--output-dir", out, key=None)
        _, err = runner.communicate(timeout=60)
    finally:
        if runner.poll() is None:
            runner.send_signal(signal.SIGKILL)
            runner.communicate()
    assert cancel.returncode == 0, cancel.stderr
    assert f"by the running raybatch (pid {runner.pid})" in cancel.stdout
    assert runner.returncode == 1, err
    assert "cancelled" in err

    stats = emu.stats()
    billed = [r for r in stats["requests"] if r["billed"]]
    dropped = [r for r in stats["requests"] if r["cancelled"]]
    assert len(billed) == 2 and dropped, stats["requests"]
    assert stats["submits"] == len(billed) + len(dropped)

    states = dict(_rows(out, "SELECT state, count(*) FROM jobs GROUP BY state"))
    assert states == {"done": len(billed), "cancelled": JOBS - len(billed)}
    # What ran was downloaded: the emulator's bytes under the job's output path.
    served = {o["url"]: o for r in billed for o in r["outputs"]}
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    done = [r for r in records if r["status"] == "done"]
    assert len(done) == len(billed)
    for record in done:
        (output,) = record["outputs"]
        assert (out / output["path"]).stat().st_size == served[output["url"]]["size"]
        assert record["spend"] > 0
    assert all(r["spend"] == 0 for r in records if r["status"] == "cancelled")
    # The dropped requests' attempts are recorded as never billed.
    billing = _rows(out, "SELECT billing, count(*) FROM attempts GROUP BY billing")
    assert dict(billing) == {"accepted": len(billed), "cancelled": len(dropped)}

    status = run_cli("status", demo, "--output-dir", out, "--json")
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert summary["total"] == states
    assert summary["paid_submissions"] == len(billed)
    assert summary["billable_units"] == stats["billable_units"]
    assert summary["estimated_spend"] == pytest.approx(sum(r["spend"] for r in done))


def test_cancel_with_no_run_marks_unsubmitted_jobs_and_drops_queued_ones(
    demo: Path, tmp_path: Path, two_slot_emulator: Emulator
) -> None:
    """With no run going, `cancel` does it itself: queued requests are dropped at fal and
    not counted in spend; jobs never submitted are cancelled too, so a plain run submits
    nothing, and `--retry-failed` runs them all."""
    emu = two_slot_emulator
    out = tmp_path / "out"
    runner = _run_in_background(demo, emu, out)
    # Three requests recorded while fal runs two: at least one recorded one is queued there.
    recorded = "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"
    wait_for_stats(emu, lambda s: s["running"] == 2 and count_rows(out / "state.db", recorded) >= 3)
    runner.send_signal(signal.SIGKILL)
    runner.communicate()
    cancel = run_cli("cancel", demo, "--fal-url", emu.url, "--output-dir", out)
    assert cancel.returncode == 0, cancel.stderr
    assert "by the running raybatch" not in cancel.stdout
    states = dict(_rows(out, "SELECT state, count(*) FROM jobs GROUP BY state"))
    assert states.get("pending", 0) == 0 and states.get("queued", 0) == 0, states
    dropped = sum(1 for r in emu.stats()["requests"] if r["cancelled"])
    assert dropped >= 1
    billing = dict(_rows(out, "SELECT billing, count(*) FROM attempts GROUP BY billing"))
    assert billing.get("cancelled") == dropped
    submits = emu.stats()["submits"]
    plain = run_cli("run", demo, "--fal-url", emu.url, "--output-dir", out)
    assert plain.returncode == 1
    assert emu.stats()["submits"] == submits, "a plain run submits no cancelled job"
    retry = run_cli("run", demo, "--fal-url", emu.url, "--output-dir", out, "--retry-failed")
    assert retry.returncode == 0, retry.stderr
    assert dict(_rows(out, "SELECT state, count(*) FROM jobs GROUP BY state")) == {"done": JOBS}
