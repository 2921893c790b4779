"""``python -m bench``: raybatch against the way people drive fal today, side by side.

Phases (each starts its own emulators on 127.0.0.1 and stops everything it started):

1. ``makespan``: the same workload (clips × looks on video-to-video, synthetic outputs)
   run by raybatch's real CLI and by the peer script, each against a fresh emulator with
   the same seed, account limit and job-duration distribution;
2. ``cpu``: the CPU-per-job curve, both sides, on short jobs (a 100k-job makespan run at
   real durations would take hours) on a pass-through endpoint with tiny outputs;
3. ``scale``: ``plan``, resume-to-first-submission and ``status`` at 1k, 10k, 100k jobs;
4. ``transfer``: 1 GiB up and down, raybatch's code against curl;
5. ``streams``: raybatch alone under each status-stream fault (silent, closed early, a cap
   on open streams): status calls per job and makespan against the same run without one.

Prints one table, writes ``<out>/latest.json`` and ``<out>/latest.md``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import report
from .scale import scale_point
from .sides import run_side
from .transfer import transfer

ROOT = Path(__file__).resolve().parent.parent
PHASES = ("makespan", "cpu", "scale", "transfer", "streams")
#: The status-stream faults of the ``streams`` phase: name → emulator switches.
STREAM_FAULTS: dict[str, tuple[str, ...]] = {
    "none": (),
    "silent": ("--faults", "stream=silent"),
    "closed early": ("--faults", "stream=close-early"),
    "stream cap (429 past 10 open)": ("--max-streams", "10"),
}


def _sizes(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def _durations(text: str) -> tuple[float, float]:
    low, _, high = text.partition(":")
    return float(low), float(high or low)


def build_parser() -> argparse.ArgumentParser:
    """The bench's options; ``--quick`` shrinks every size for a smoke test."""
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness only")
    p.add_argument("--jobs", type=int, help="jobs in the makespan run (default 2000)")
    p.add_argument("--limit", type=int, help="account concurrency limit (default 40)")
    p.add_argument("--durations", type=_durations, help="job seconds MIN:MAX (default 2:10)")
    p.add_argument("--seed", type=int, default=1, help="emulator seed (default 1)")
    p.add_argument(
        "--scale", type=_sizes, help="plan/resume/status sizes (default 1000,10000,100000)"
    )
    p.add_argument("--cpu-scale", type=_sizes, help="CPU-curve sizes (default 1000,10000)")
    p.add_argument("--curve-limit", type=int, help="account limit of the CPU curve (default 100)")
    p.add_argument(
        "--curve-durations", type=_durations, help="CPU-curve job seconds (default 0.05:0.2)"
    )
    p.add_argument("--transfer-mib", type=int, help="transfer file size in MiB (default 1024)")
    p.add_argument("--transfer-repeats", type=int, help="best of N transfers (default 2)")
    p.add_argument("--only", action="append", choices=PHASES, help="run only these phases")
    p.add_argument(
        "--out", type=Path, help="where latest.json/latest.md go (default bench/results)"
    )
    p.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the scratch directory")
    return p


def settle(args: argparse.Namespace) -> dict[str, Any]:
    """Every setting, with the full or quick defaults filled in."""
    quick = args.quick
    defaults: dict[str, Any] = {
        "jobs": 20 if quick else 2000,
        "limit": 5 if quick else 40,
        "durations": (0.2, 0.5) if quick else (2.0, 10.0),
        "scale": [100] if quick else [1000, 10000, 100000],
        "cpu_scale": [40] if quick else [1000, 10000],
        "curve_limit": 20 if quick else 100,
        "curve_durations": (0.05, 0.2),
        "transfer_mib": 8 if quick else 1024,
        "transfer_repeats": 1 if quick else 2,
        "out": ROOT / "bench" / "results" / ("quick" if quick else ""),
    }
    config = {k: v if getattr(args, k) is None else getattr(args, k) for k, v in defaults.items()}
    config.update(quick=quick, seed=args.seed, phases=list(args.only or PHASES))
    config.update(work=args.work, keep=args.keep)
    return config


def machine() -> dict[str, Any]:
    """What this ran on."""
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(total_kb / 2**20, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def run(config: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run the chosen phases; the figures, as written to ``latest.json``."""
    started = time.monotonic()
    figures: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "config": {k: v for k, v in config.items() if k not in ("out", "work", "keep")},
    }
    # raybatch remembers plans in $XDG_CACHE_HOME and output directories in
    # $XDG_STATE_HOME: both go in the scratch directory, so every run starts from nothing
    # and the user's own caches are neither used nor touched.
    for name in ("XDG_CACHE_HOME", "XDG_STATE_HOME"):
        os.environ[name] = str(work / name.lower())
    phases = config["phases"]
    jobs, limit, durations = config["jobs"], config["limit"], config["durations"]
    if "makespan" in phases:
        timeout = 600 + 5 * jobs * sum(durations) / 2 / limit
        sides = {
            side: run_side(
                side,
                "library",
                work / "makespan" / side,
                jobs=jobs,
                limit=limit,
                durations=durations,
                seed=config["seed"],
                output_bytes=0,
                timeout=timeout,
            )
            for side in ("raybatch", "peer")
        }
        _progress(f"makespan: {_brief(sides)}")
        figures["makespan"] = {**sides, "ratio": report.ratios(sides["raybatch"], sides["peer"])}
    if "cpu" in phases:
        curve = []
        for size in config["cpu_scale"]:
            point: dict[str, Any] = {"jobs": size}
            for side in ("raybatch", "peer"):
                point[side] = run_side(
                    side,
                    "synthetic",
                    work / "cpu" / f"{side}-{size}",
                    jobs=size,
                    limit=config["curve_limit"],
                    durations=config["curve_durations"],
                    seed=config["seed"],
                    output_bytes=1024,
                    timeout=3600,
                )
            point["cpu_ratio"] = _ratio(
                point["raybatch"]["cpu_s_per_1000_jobs"], point["peer"]["cpu_s_per_1000_jobs"]
            )
            _progress(f"cpu curve at {size}: {_brief(point)}")
            curve.append(point)
        figures["cpu_curve"] = curve
    if "scale" in phases:
        points = []
        for size in config["scale"]:
            points.append(
                scale_point(
                    work / "scale" / str(size), size, limit=limit, seed=config["seed"], timeout=900
                )
            )
            _progress(f"scale at {size}: {points[-1]}")
        figures["scale"] = points
    if "transfer" in phases:
        figures["transfer"] = transfer(
            work / "transfer",
            config["transfer_mib"] * 2**20,
            repeats=config["transfer_repeats"],
            timeout=900,
        )
        _progress(f"transfer: {figures['transfer']}")
    if "streams" in phases:
        figures["streams"] = _streams(config, work / "streams")
    figures["targets"] = report.targets(figures)
    figures["bench_seconds"] = round(time.monotonic() - started, 1)
    return figures


def _streams(config: dict[str, Any], work: Path) -> list[dict[str, Any]]:
    """raybatch's figures under each stream fault (a tenth of the makespan workload)."""
    jobs = max(10, config["jobs"] // 10)
    rows = []
    for name, switches in STREAM_FAULTS.items():
        figures = run_side(
            "raybatch",
            "library",
            work / name.split()[0],
            jobs=jobs,
            limit=config["limit"],
            durations=config["durations"],
            seed=config["seed"],
            output_bytes=0,
            timeout=900,
            emulator_args=switches,
            # Quick mode checks the harness: a silent stream is given up after 2 s.
            options=("--stream-idle", "2") if config["quick"] else (),
        )
        row = {"fault": name, "jobs": jobs}
        row |= {k: figures.get(k) for k in ("status_calls_per_job", "makespan_s", "exit_code")}
        rows.append(row)
        _progress(f"streams, {name}: {row}")
    return rows


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def _brief(sides: dict[str, Any]) -> str:
    keys = ("makespan_s", "ideal_s", "cpu_s_per_1000_jobs", "status_calls_per_job", "exit_code")
    return "; ".join(
        f"{name}: " + ", ".join(f"{k}={value.get(k)}" for k in keys)
        for name, value in sides.items()
        if isinstance(value, dict)
    )


def _progress(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m bench``."""
    config = settle(build_parser().parse_args(argv))
    if shutil.which("curl") is None and "transfer" in config["phases"]:
        print("bench: curl is needed for the transfer phase", file=sys.stderr)
        return 2
    out: Path = config["out"]
    out.mkdir(parents=True, exist_ok=True)
    work = config.get("work") or Path(tempfile.mkdtemp(prefix="raybatch-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # raybatch's bytecode, compiled once, as an installed copy has it (pip compiles on
    # install): without it, every measured process compiles the source again when the
    # environment sets PYTHONDONTWRITEBYTECODE (0.1-0.3 s and 20 MB more per command).
    compileall.compile_dir(ROOT / "runner", quiet=1)
    try:
        figures = run(config, work)
    finally:
        if not config.get("keep"):
            shutil.rmtree(work, ignore_errors=True)
    table = report.markdown(figures)
    _write(out / "latest.json", json.dumps(figures, indent=2) + "\n")
    _write(out / "latest.md", table)
    print(table)
    print(f"wrote {out / 'latest.json'} and {out / 'latest.md'}")
    return 0
