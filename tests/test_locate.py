"""`status`, `report`, `cancel` and `verify` read the state: they need no source file, and
find the output directory from any working directory, saying where they looked."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import Emulator, run_cli

JOBS = 9


def test_read_commands_need_no_sources(demo: Path, tmp_path: Path, emulator: Emulator) -> None:
    """A source moved after the run is a warning naming it, never exit 2: status counts the
    state's jobs, report and verify work, cancel finds nothing to do."""
    out = tmp_path / "out"
    ran = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    assert ran.returncode == 0, ran.stderr
    (demo.parent / "media" / "beach.mp4").rename(tmp_path / "beach-moved.mp4")

    status = run_cli("status", demo, "--output-dir", out, "--json")
    assert status.returncode == 0, status.stderr
    assert "beach.mp4" in status.stderr and "as the state holds them" in status.stderr
    summary = json.loads(status.stdout)
    assert summary["total"] == {"done": JOBS}, "a moved clip's jobs are still counted"
    assert summary["estimated_spend"] > 0
    assert any("beach.mp4" in w for w in summary["warnings"])
    only = run_cli("status", demo, "--output-dir", out, "--json", "--only", "clip=beach")
    assert only.returncode == 0, only.stderr
    assert json.loads(only.stdout)["total"] == {"done": 3}

    (out / "index.html").unlink()
    report = run_cli("report", demo, "--output-dir", out)
    assert report.returncode == 0, report.stderr
    page = (out / "index.html").read_text()
    assert page.count('class="job') >= JOBS and "beach" in page

    verify = run_cli("verify", demo, "--output-dir", out)
    assert verify.returncode == 0, verify.stderr
    assert f"{JOBS} done job(s) checked" in verify.stdout

    cancel = run_cli("cancel", demo, "--output-dir", out, key=None)  # nothing at fal: no key
    assert cancel.returncode == 0, cancel.stderr
    assert "nothing to cancel" in cancel.stdout

    # Every clip gone: the manifest cannot be planned at all; the state still answers.
    for clip in ("city", "forest"):
        (demo.parent / "media" / f"{clip}.mp4").unlink()
    status = run_cli("status", demo, "--output-dir", out, "--json")
    assert status.returncode == 0, status.stderr
    assert "cannot be planned as it stands" in status.stderr
    assert json.loads(status.stdout)["total"] == {"done": JOBS}


def test_read_commands_find_the_state_from_another_directory(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """Run with the default output directory (relative to where it ran), then ask from
    elsewhere: the state is found through the index of earlier runs, with a note naming
    it; report writes there, not into the current directory."""
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    ran = run_cli("run", demo, "--fal-url", emulator.url, cwd=here)
    assert ran.returncode == 0, ran.stderr
    state_dir = here / "outputs" / "demo"

    status = run_cli("status", demo, "--json", cwd=there)
    assert status.returncode == 0, status.stderr
    assert f"using {state_dir}" in status.stderr
    summary = json.loads(status.stdout)
    assert summary["output_dir"] == str(state_dir)
    assert summary["total"] == {"done": JOBS}

    report = run_cli("report", demo, cwd=there)
    assert report.returncode == 0, report.stderr
    assert f"wrote {state_dir / 'index.html'}" in report.stdout
    assert not (there / "outputs").exists()

    cancel = run_cli("cancel", demo, cwd=there, key=None)
    assert cancel.returncode == 0, cancel.stderr
    assert "nothing to cancel: no job is unfinished" in cancel.stdout

    # A second place the manifest ran: the latest is used, and the note names the other.
    elsewhere = tmp_path / "elsewhere"
    again = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", elsewhere)
    assert again.returncode == 0, again.stderr
    status = run_cli("status", demo, "--json", cwd=there)
    assert json.loads(status.stdout)["output_dir"] == str(elsewhere)
    assert str(state_dir) in status.stderr and "--output-dir" in status.stderr
