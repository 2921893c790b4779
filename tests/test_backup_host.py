"""fal's backup host (issue 14 §6): a queue call that cannot even connect to the queue
origin (so it provably never reached fal) goes once to the backup host, as fal-client
1.0.3 does; nothing that may have reached fal is ever sent twice."""

from __future__ import annotations

import json
from pathlib import Path

from .conftest import one_clip_manifest, run_cli, start_emulator, stop_emulator

JOBS = 3


def test_a_refused_queue_origin_is_served_by_the_backup_host(tmp_path: Path) -> None:
    """The queue origin refuses every connection; every call goes to the backup host,
    every job is done, each submitted once."""
    emulator = start_emulator(
        "--job-seconds", "0.3:0.6", "--backup-host", "127.0.0.2",
        "--faults", "connect@+0s..=refuse",
    )  # fmt: skip
    assert emulator.process.stdout is not None
    lines = [emulator.process.stdout.readline().strip() for _ in range(2)]
    backup = next(line.split(" on ", 1)[1] for line in lines if line.startswith("backup on "))
    try:
        manifest = one_clip_manifest(tmp_path, JOBS)
        out = tmp_path / "out"
        ran = run_cli("run", manifest, "--fal-url", emulator.url, "--fal-backup-url", backup,
                      "--output-dir", out)  # fmt: skip
        stats = emulator.stats_at(backup)
    finally:
        stop_emulator(emulator)
    assert ran.returncode == 0, ran.stderr
    assert stats["submits"] == JOBS
    status = run_cli("status", manifest, "--json", "--output-dir", out)
    assert json.loads(status.stdout)["total"] == {"done": JOBS}


def test_without_a_backup_host_a_refused_origin_is_an_outage(tmp_path: Path) -> None:
    """No backup host: the refused origin holds the run at the outage gate, and past the
    outage limit the run stops (exit 3) with every job still to run, none failed."""
    emulator = start_emulator("--job-seconds", "0.3:0.6", "--faults", "connect@+0s..=refuse")
    try:
        manifest = one_clip_manifest(tmp_path, JOBS)
        ran = run_cli("run", manifest, "--fal-url", emulator.url, "--max-outage", "3",
                      "--output-dir", tmp_path / "out")  # fmt: skip
    finally:
        stop_emulator(emulator)
    assert ran.returncode == 3, ran.stderr
    assert "unreachable since" in ran.stderr
    status = run_cli("status", manifest, "--json", "--output-dir", tmp_path / "out")
    assert json.loads(status.stdout)["total"] == {"pending": JOBS}
