"""fal's status stream misbehaving (issue 14): silent for minutes, closed before COMPLETED,
or refused past a cap on open streams. Each time the runner notices within a bounded
time, polls without losing the job, goes back to the stream when it can, and finishes
every job with a bounded number of status calls. Real CLI, real emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import one_clip_manifest, run_cli, start_emulator, stop_emulator

JOBS = 4
#: Status calls (stream opens + polls) per job a fault may cost, at most. A clean run
#: makes one (the stream); polling a 2-4 s job from 1 s, growing by half, takes ~4.
BOUND = 8


@pytest.mark.parametrize(
    "emulator_args",
    [
        pytest.param(("--faults", "stream=silent"), id="silent"),
        pytest.param(("--faults", "stream=silent:1"), id="silent-after-an-event"),
        pytest.param(("--faults", "stream=close-early"), id="closed-early"),
        pytest.param(("--max-streams", "1"), id="stream-cap-429"),
    ],
)
def test_stream_faults_end_with_every_job_done(
    tmp_path: Path, emulator_args: tuple[str, ...]
) -> None:
    """Each stream fault: every job done, one submit each, status calls per job bounded."""
    emulator = start_emulator("--job-seconds", "2:4", "--seed", "2", *emulator_args)
    try:
        manifest = one_clip_manifest(tmp_path, JOBS, concurrency=JOBS)
        ran = run_cli("run", manifest, "--fal-url", emulator.url, "--stream-idle", "1",
                      "--output-dir", tmp_path / "out")  # fmt: skip
        stats = emulator.stats()
    finally:
        stop_emulator(emulator)
    assert ran.returncode == 0, ran.stderr
    assert stats["submits"] == JOBS
    calls = stats["stream_calls"] + stats["status_calls"]
    assert calls <= BOUND * JOBS, (stats["stream_calls"], stats["status_calls"])
    status = run_cli("status", manifest, "--json", "--output-dir", tmp_path / "out")
    assert json.loads(status.stdout)["total"] == {"done": JOBS}
