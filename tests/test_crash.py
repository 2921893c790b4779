"""Crash safety, proved by killing the real CLI (fast variant of tests/crash_harness.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .crash_harness import sweep


@pytest.mark.timeout(400)
def test_kills_at_every_point_and_at_random_lose_nothing_and_pay_nothing_twice(
    tmp_path: Path,
) -> None:
    """Killed at each named transition and at random moments, the batch still ends with
    every job done once, no unexplained duplicate submits and every file intact."""
    report = sweep(tmp_path, kills=12, seed=7)
    assert report.violations == []
    assert report.kills >= 10, "the runs must really have been killed"
    assert len(report.point_kills) >= 6, report.point_kills
    assert report.unexplained_duplicates == 0
    assert report.duplicate_submits <= report.ambiguous
    assert report.lost_outputs == report.corrupt_outputs == report.leftover_parts == 0
    assert report.integrity == "ok"


@pytest.mark.timeout(400)
def test_kills_across_long_clip_batches_lose_nothing_and_leave_no_half_stitch(
    tmp_path: Path,
) -> None:
    """Long-clip batches (cuts, frames, looks, start frames, renders, stitches) killed at
    every named point, the local step's too, and at random: every job done once, nothing
    paid twice beyond counted ambiguous submits, no stitched file ever incomplete."""
    report = sweep(tmp_path, kills=10, seed=5, long=True)
    assert report.violations == []
    assert report.kills >= 8, "the runs must really have been killed"
    assert "after_step" in report.point_kills, report.point_kills
    assert report.unexplained_duplicates == 0
    assert report.lost_outputs == report.corrupt_outputs == report.leftover_parts == 0
    assert report.half_written == 0
    assert report.integrity == "ok"
