"""One side of the comparison: a fresh emulator, the workload, the client, the figures.

The client is the real ``python -m runner run`` (raybatch) or ``bench/peer.py`` (the
peer), each in its own process, measured by ``os.wait4``. The remote figures come from
the emulator's own stats: it is the witness both sides talk to.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any, Literal

from . import workload
from .procs import ROOT, Emulator, Measured, measure, python

Side = Literal["raybatch", "peer"]
Shape = Literal["library", "synthetic"]


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) by linear interpolation; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def remote_figures(stats: dict[str, Any], jobs: int, limit: int) -> dict[str, Any]:
    """What the emulator saw: run times, the ideal bound, utilisation, calls, latencies."""
    requests = stats["requests"]
    ran = [r for r in requests if r["started_at"] is not None and r["completed_at"] is not None]
    durations = [r["completed_at"] - r["started_at"] for r in ran]
    total = sum(durations)
    latencies = [
        r["first_result_at"] - r["completed_at"]
        for r in ran
        if r.get("first_result_at") is not None
    ]
    first_submit = min((r["submitted_at"] for r in requests), default=None)
    last_done = max((r["completed_at"] for r in ran), default=None)
    status_calls = stats["status_calls"] + stats["stream_calls"]
    return {
        "submits": stats["submits"],
        "distinct_inputs": stats["distinct_inputs"],
        "remote_run_seconds": round(total, 3),
        "longest_job_s": round(max(durations, default=0.0), 3),
        "ideal_s": round(max(total / limit, max(durations, default=0.0)), 3),
        "remote_makespan_s": round(last_done - first_submit, 3)
        if first_submit is not None and last_done is not None
        else None,
        "slot_utilisation": stats["slot_utilisation"],
        "running_max": stats["running_max"],
        "status_polls": stats["status_calls"],
        "stream_opens": stats["stream_calls"],
        "status_calls_per_job": round(status_calls / jobs, 3),
        "result_calls_per_job": round(stats["result_calls"] / jobs, 3),
        "fetch_latency_p50_s": _round(percentile(latencies, 0.5)),
        "fetch_latency_p95_s": _round(percentile(latencies, 0.95)),
        "fetch_latency_max_s": _round(max(latencies, default=None)),
        "fetch_latency_mean_s": _round(statistics.fmean(latencies) if latencies else None),
    }


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def client_command(
    side: Side, load: workload.Workload, url: str, limit: int, options: tuple[str, ...] = ()
) -> list[str]:
    """The command line that runs ``load`` against ``url`` on one side (``options``:
    more of raybatch's run options)."""
    if side == "raybatch":
        return python(
            "-m",
            "runner",
            "run",
            str(load.manifest),
            "--fal-url",
            url,
            "--concurrency",
            str(limit),
            *options,
        )
    return python(
        str(ROOT / "bench" / "peer.py"),
        str(load.jobs_file),
        "--fal-url",
        url,
        "--concurrency",
        str(limit),
        "--out",
        str(load.output_dir),
    )


def client_figures(measured: Measured, jobs: int) -> dict[str, Any]:
    """What the client process cost: wall, CPU per 1,000 jobs, peak RSS."""
    return {
        "exit_code": measured.returncode,
        "makespan_s": round(measured.wall, 3),
        "cpu_s": round(measured.cpu, 3),
        "cpu_user_s": round(measured.user, 3),
        "cpu_sys_s": round(measured.sys, 3),
        "cpu_s_per_1000_jobs": round(measured.cpu / jobs * 1000, 3),
        "peak_rss_mb": round(measured.maxrss_mb, 1),
    }


def run_side(
    side: Side,
    shape: Shape,
    work: Path,
    *,
    jobs: int,
    limit: int,
    durations: tuple[float, float],
    seed: int,
    output_bytes: int,
    timeout: float,
    emulator_args: tuple[str, ...] = (),
    options: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run one side end to end on a fresh emulator (started with ``emulator_args``, such as
    faults); every figure for that side."""
    work.mkdir(parents=True, exist_ok=True)
    with Emulator(
        work, limit=limit, durations=durations, seed=seed, extra=emulator_args
    ) as emulator:
        if shape == "library":
            clips, _ = workload.shape(jobs)
            urls = workload.upload_clips(emulator.url, clips)
            load = workload.library(work, jobs, urls)
        else:
            load = workload.synthetic(work, jobs, output_bytes)
        emulator_cpu = emulator.cpu_seconds()
        measured = measure(
            client_command(side, load, emulator.url, limit, options),
            cwd=work,
            log=work / f"{side}.log",
            timeout=timeout,
        )
        emulator_cpu = emulator.cpu_seconds() - emulator_cpu
        stats = emulator.stats()
    figures = {"jobs": load.jobs, **client_figures(measured, load.jobs)}
    figures["emulator_cpu_s"] = round(emulator_cpu, 2)
    figures.update(remote_figures(stats, load.jobs, limit))
    first = min((r["submitted_at"] for r in stats["requests"]), default=None)
    figures["first_submit_s"] = None if first is None else round(first - measured.started_at, 3)
    figures["outputs"] = sum(1 for p in load.output_dir.rglob("*.mp4") if p.is_file())
    figures["makespan_ratio_to_ideal"] = (
        round(figures["makespan_s"] / figures["ideal_s"], 4) if figures["ideal_s"] else None
    )
    return figures
