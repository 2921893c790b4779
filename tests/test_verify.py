"""Outputs are checked again: `verify` (size and mtime; `--full`: sha256) marks a missing
or altered output "needs fetch", `run` does the quick check itself before it says done,
and such a job is downloaded again from its kept result, never rendered again unless
`--rerender` asks (priced first)."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from pathlib import Path

from runner.state import DirectoryLock

from .conftest import Emulator, run_cli

JOBS = 9
TARGET = Path("city") / "noir.mp4"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state_of(out: Path, path: Path) -> str:
    db = sqlite3.connect(out / "state.db")
    try:
        (state,) = db.execute("SELECT state FROM jobs WHERE output = ?", (str(path),)).fetchone()
    finally:
        db.close()
    return str(state)


def _ran(demo: Path, out: Path, emulator: Emulator, *extra: str) -> str:
    """`run` the demo; returns its stderr (asserting exit 0)."""
    done = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out, *extra)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_a_deleted_output_is_fetched_again_not_rendered_again(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """verify names the missing file and marks it; the next run downloads the same bytes
    again with no new submission; verify is then clean."""
    out = tmp_path / "out"
    _ran(demo, out, emulator)
    original = _sha256(out / TARGET)
    (out / TARGET).unlink()

    found = run_cli("verify", demo, "--output-dir", out)
    assert found.returncode == 1, found.stderr
    assert f"city/noir: {TARGET} is missing" in found.stdout
    assert "1 of 9 done job(s) need fetch" in found.stdout
    assert _state_of(out, TARGET) == "completed"

    _ran(demo, out, emulator)
    assert emulator.stats()["submits"] == JOBS, "fetched again, not rendered again"
    assert _sha256(out / TARGET) == original
    clean = run_cli("verify", demo, "--output-dir", out)
    assert clean.returncode == 0 and "every output is as recorded" in clean.stdout


def test_run_checks_done_outputs_before_calling_them_done(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """Without verify, a rerun notices the deleted output (a stat) and fetches it again."""
    out = tmp_path / "out"
    _ran(demo, out, emulator)
    original = _sha256(out / TARGET)
    (out / TARGET).unlink()
    err = _ran(demo, out, emulator)
    assert "1 done job(s) have outputs missing or altered" in err
    assert emulator.stats()["submits"] == JOBS
    assert _sha256(out / TARGET) == original


def test_a_corrupted_output_is_caught_by_full_verify(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """Bytes flipped in place, size and mtime kept: the quick check cannot see it, --full
    does, and the run restores the file; an edit that moves the mtime is caught quick."""
    out = tmp_path / "out"
    _ran(demo, out, emulator)
    path = out / TARGET
    original, info = _sha256(path), path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))

    quick = run_cli("verify", demo, "--output-dir", out)
    assert quick.returncode == 0, quick.stdout
    full = run_cli("verify", demo, "--output-dir", out, "--full")
    assert full.returncode == 1
    assert f"{TARGET} was altered" in full.stdout
    _ran(demo, out, emulator)
    assert _sha256(path) == original and emulator.stats()["submits"] == JOBS

    path.write_bytes(bytes(data))  # a plain edit: same size, new mtime
    edited = run_cli("verify", demo, "--output-dir", out)
    assert edited.returncode == 1 and f"{TARGET} was altered" in edited.stdout


def test_rerender_renders_a_missing_output_again_priced_first(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """--rerender counts the job in the estimate (a --max-cost below it refuses, nothing
    submitted), then renders it as one new, paid request; spend counts both renders."""
    out = tmp_path / "out"
    _ran(demo, out, emulator)
    (out / TARGET).unlink()
    args = ("run", demo, "--fal-url", emulator.url, "--output-dir", out, "--rerender")
    refused = run_cli(*args, "--max-cost", "0.10")
    assert refused.returncode == 2, refused.stderr
    assert "above --max-cost" in refused.stderr
    assert emulator.stats()["submits"] == JOBS
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "rendering 1 job(s) again (--rerender)" in again.stderr
    assert emulator.stats()["submits"] == JOBS + 1
    assert (out / TARGET).exists()
    status = json.loads(run_cli("status", demo, "--output-dir", out, "--json").stdout)
    assert status["total"] == {"done": JOBS} and status["paid_submissions"] == JOBS + 1


def test_an_output_fal_no_longer_serves_fails_pointing_at_rerender(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """A missing output whose download again fails (the CDN answers 404) fails the job,
    keeping its result, and says that --rerender renders it again; that run does."""
    out = tmp_path / "out"
    _ran(demo, out, emulator)
    (out / TARGET).unlink()
    emulator.post("/_emulator/faults", {"spec": "cdn=404"})
    args = ("run", demo, "--fal-url", emulator.url, "--output-dir", out, "--retries", "1")
    failed = run_cli(*args)
    assert failed.returncode == 1
    status = json.loads(run_cli("status", demo, "--output-dir", out, "--json").stdout)
    (group,) = status["failures"]
    assert group["class"] == "OutputMissing" and "--rerender" in group["reason"]
    emulator.post("/_emulator/faults", {"spec": ""})
    _ran(demo, out, emulator, "--rerender")
    assert emulator.stats()["submits"] == JOBS + 1
    assert _state_of(out, TARGET) == "done"


def test_verify_while_a_run_holds_the_directory_reports_without_marking(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """With the directory locked by a run, verify still finds the missing file but leaves
    the state to the run (its single writer), and says so."""
    out = tmp_path / "out"
    _ran(demo, out, emulator)
    (out / TARGET).unlink()
    with DirectoryLock(out):  # held here, as a run would hold it
        found = run_cli("verify", demo, "--output-dir", out)
    assert found.returncode == 1
    assert f"city/noir: {TARGET} is missing" in found.stdout
    assert "not marked" in found.stdout
    assert _state_of(out, TARGET) == "done"


def test_a_damaged_output_is_fetched_again_beside_the_pending_jobs(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """Outputs no job reads are checked while the run submits its pending jobs: one run
    renders the jobs left and fetches the deleted file again, and counts all nine done."""
    out = tmp_path / "out"
    _ran(demo, out, emulator, "--only", "city")
    original = _sha256(out / TARGET)
    submitted = emulator.stats()["submits"]
    assert 0 < submitted < JOBS
    (out / TARGET).unlink()
    err = _ran(demo, out, emulator)
    assert "1 done job(s) have outputs missing or altered" in err
    assert f"{JOBS} done, 0 failed" in err
    assert emulator.stats()["submits"] == JOBS, "the rest rendered, the deleted one fetched"
    assert _sha256(out / TARGET) == original
    assert _state_of(out, TARGET) == "done"
