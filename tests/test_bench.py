"""The bench harness, end to end in quick mode: it runs and reports every figure (no timings)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from runner.job import JobSpec, job_key, parent_ref

from .fakefal import ENDPOINT

ROOT = Path(__file__).resolve().parent.parent

#: Per-side figures of the makespan run (and of each CPU-curve point).
SIDE_FIGURES = (
    "makespan_s",
    "ideal_s",
    "makespan_ratio_to_ideal",
    "slot_utilisation",
    "status_calls_per_job",
    "fetch_latency_p50_s",
    "fetch_latency_p95_s",
    "cpu_s_per_1000_jobs",
    "peak_rss_mb",
    "submits",
    "outputs",
)
SCALE_FIGURES = (
    "plan_s",
    "plan_peak_rss_mb",
    "resume_to_first_submit_s",
    "status_s",
    "status_peak_rss_mb",
)


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """Run ``python -m bench --quick`` once; its JSON and its printed table."""
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--work", str(out / "work")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (out / "work").exists()  # the scratch directory is cleaned up
    assert (out / "latest.md").read_text() in done.stdout
    return json.loads((out / "latest.json").read_text()), done.stdout


@pytest.mark.timeout(150)
def test_quick_bench_reports_both_sides(quick: tuple[dict[str, Any], str]) -> None:
    """Both sides ran every job and every comparison figure is present for each."""
    figures, table = quick
    jobs = figures["config"]["jobs"]
    for side in ("raybatch", "peer"):
        result = figures["makespan"][side]
        assert result["exit_code"] == 0
        assert result["submits"] == result["outputs"] == jobs
        for name in SIDE_FIGURES:
            assert result[name] is not None, (side, name)
    assert all(
        figures["makespan"]["ratio"][name] is not None
        for name in ("makespan_s", "status_calls_per_job", "cpu_s_per_1000_jobs")
    )
    assert "| makespan ÷ ideal |" in table and "peer (fal_client)" in table


@pytest.mark.timeout(150)
def test_quick_bench_covers_curve_scale_transfer_and_targets(
    quick: tuple[dict[str, Any], str],
) -> None:
    """The CPU curve, scale points, transfers, stream faults and every target have their
    figures."""
    figures, text = quick
    faults = [row["fault"] for row in figures["streams"]]
    assert faults[0] == "none" and len(faults) == 4 and "silent" in faults
    assert all(row["exit_code"] == 0 and row["status_calls_per_job"] for row in figures["streams"])
    assert "Status-stream faults" in text
    assert [p["jobs"] for p in figures["cpu_curve"]] == figures["config"]["cpu_scale"]
    for point in figures["cpu_curve"]:
        assert point["cpu_ratio"] is not None
        for side in ("raybatch", "peer"):
            assert point[side]["exit_code"] == 0 and point[side]["cpu_s_per_1000_jobs"] > 0
    assert [p["jobs"] for p in figures["scale"]] == figures["config"]["scale"]
    for point in figures["scale"]:
        assert all(point[name] is not None for name in SCALE_FIGURES), point
    for way in ("download", "upload"):
        assert set(figures["transfer"][way]) == {
            "raybatch_mib_s",
            "curl_mib_s",
            "ratio",
            "raybatch_rss_growth_mb",
        }
    names = " ".join(t["target"] for t in figures["targets"])
    for word in (
        "makespan",
        "status calls",
        "p95",
        "CPU",
        "plan time",
        "plan peak RSS",
        "resume",
        "status time",
        "download",
        "upload",
    ):
        assert word in names
    assert all(t["met"] is not None for t in figures["targets"])


def test_long_bench_runs_both_feeders_over_one_plan(tmp_path: Path) -> None:
    """``python -m bench.long --quick``: both feeders finish the same chained plan and the
    figures (makespan, lower bound and its parts, ratio) are reported; no timing asserted."""
    done = subprocess.run(
        [sys.executable, "-m", "bench.long", "--quick", "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures = json.loads((tmp_path / "quick" / "long.json").read_text())
    runs = {run["order"]: run for run in figures["runs"]}
    assert set(runs) == {"critical-path", "fifo"}
    for run in runs.values():
        assert run["done"] == run["jobs"] > 0
        assert run["bound"] == max(run["remote_seconds"] / figures["slots"], run["longest_chain"])
        assert run["ratio"] == pytest.approx(run["makespan"] / run["bound"], abs=0.01)
        assert run["whole_render_bound"] >= run["bound"]
        assert run["simulated"] >= run["whole_render_bound"] - 1e-6, "a bound was beaten"
    assert "| critical-path |" in done.stdout and "| fifo |" in done.stdout


def _job(name: str, endpoint: str = ENDPOINT, parents: tuple[str, ...] = ()) -> JobSpec:
    arguments = {"prompt": name, **({"image_url": parent_ref(parents[0])} if parents else {})}
    return JobSpec(job_key(endpoint, arguments), endpoint, arguments, f"{name}.out",
                   prompt=name, parents=parents)  # fmt: skip


def test_long_bench_bounds_count_whole_renders_and_the_simulated_feeder_meets_them() -> None:
    """Two slots, a chain of two 8 s renders (a frame between) and three single 8 s
    renders: the issue's bound is 40 ÷ 2 = 20 s, but five whole renders on two slots put
    three on one, 24 s; the critical-path feeder, replayed with no latency, keeps the
    chain's place for its second render and ends at exactly 24 s."""
    from bench.long import lower_bound, simulate

    first = _job("a0")
    frame = _job("frame", "local/frame", (first.key,))
    second = _job("a1", parents=(frame.key,))
    singles = [_job(f"b{n}") for n in range(3)]
    jobs = [*singles, first, frame, second]
    seconds = [0.02 if job.kind == "local" else 8.0 for job in jobs]
    bound = lower_bound(jobs, seconds, slots=2)
    assert bound["remote_seconds"] == 40 and bound["longest_chain"] == pytest.approx(16.02)
    assert bound["bound"] == 20 and bound["whole_render_bound"] == 24
    assert simulate(jobs, seconds, "critical-path", slots=2) == pytest.approx(24)
    assert simulate(jobs, seconds, "fifo", slots=2) > 24, "FIFO starts the chain last"
