"""Costs that grow with the batch: ``plan``, ``status`` and resume, at a given job count.

* ``plan``: the real ``python -m runner plan`` on the library manifest (clips × 10 looks,
  URL clips, real endpoint model), no state yet: wall time and peak RSS; first cold (the
  manifest never planned), then again (the plan remembered, see runner/plan_cache.py).
* resume: a ``state.db`` holding every job, half of them ``done`` (their request, result
  and outputs recorded through the real ``Transitions``), built directly instead of by
  running the batch, but added the way ``run`` adds a plan; then ``python -m runner run``
  against a fresh emulator, timed from the spawn to the emulator's first submit. The
  runner is then stopped (two SIGINTs: drain, then leave in-flight requests), so only
  start-up is measured.
* ``status``: ``python -m runner status`` on that half-done state.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from . import workload
from .procs import ROOT, Emulator, measure, python, spawn


def build_state(manifest: Path, done_fraction: float = 0.5) -> int:
    """Create the manifest's ``state.db`` with every job, the first ``done_fraction`` done.

    Uses raybatch's own store and transitions, so the rows are what a run writes.
    Returns how many jobs were marked done. Their output files are created sparse (the
    recorded size, no blocks written), since ``run`` stats every done output before it
    starts, as it does on a real library.
    """
    from runner.plan import cached_plan
    from runner.state import OutputFile, StateStore, Transitions

    the_plan = cached_plan(manifest)
    the_plan.output_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore.open(the_plan.output_dir / "state.db")
    try:
        store.execute_batch([Transitions.add_plan(the_plan.jobs, the_plan.identity)])
        done = the_plan.jobs[: int(len(the_plan.jobs) * done_fraction)]
        for start in range(0, len(done), 5000):
            ops = []
            for n, spec in enumerate(done[start : start + 5000], start):
                request_id = f"00000000-0000-4000-8000-{n:012d}"
                base = f"https://queue.fal.run/luma/agent/requests/{request_id}"
                url = f"https://v3.fal.media/files/bench/{n:08d}/output.mp4"
                result = {
                    "video": {
                        "url": url,
                        "content_type": "video/mp4",
                        "file_name": "output.mp4",
                        "file_size": 262144,
                    }
                }
                path = the_plan.output_dir / str(spec.output)
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "wb") as sparse:
                    sparse.truncate(262144)
                stamp = path.stat().st_mtime_ns
                output = OutputFile(str(spec.output), f"{n:064x}", 262144, url, "video", stamp)
                ops += [
                    Transitions.intent(spec.key, 1, spec.estimated_cost),
                    Transitions.submitted(
                        spec.key, request_id, f"{base}/status", base, f"{base}/cancel"
                    ),
                    Transitions.running(spec.key),
                    Transitions.completed(spec.key, result, 5.0),
                    Transitions.done(spec.key, [output]),
                ]
            store.execute_batch(ops)
    finally:
        store.close()
    return len(done)


def _build_state_apart(work: Path, manifest: Path, timeout: float) -> int:
    """:func:`build_state` in a child process. Built here, its 100k jobs grew this process
    by 130 MB, and Linux counts a parent's resident set at the fork in each later child's
    peak RSS: ``status`` and ``run`` were charged for the bench's own memory."""
    script = (
        "import sys; from pathlib import Path; from bench.scale import build_state;"
        " print(build_state(Path(sys.argv[1])))"
    )
    log = work / "build-state.log"
    built = measure(python("-c", script, str(manifest)), cwd=ROOT, log=log, timeout=timeout)
    if built.returncode != 0:
        raise RuntimeError(f"building the state failed, see {log}")
    return int(log.read_text().split()[-1])


def first_submit(
    work: Path, manifest: Path, *, limit: int, seed: int, timeout: float
) -> dict[str, Any]:
    """Spawn ``run`` on an existing state; seconds from the spawn to fal's first submit."""
    emulator = Emulator(work, limit=limit, durations=(600, 600), seed=seed, name="resume-emulator")
    with emulator as emu:
        running = spawn(
            python(
                "-m",
                "runner",
                "run",
                str(manifest),
                "--fal-url",
                emu.url,
                "--concurrency",
                str(limit),
            ),
            cwd=work,
            log=work / "resume.log",
        )
        seconds = None
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and running.alive():
                requests = emu.stats()["requests"]
                if requests:
                    first = min(r["submitted_at"] for r in requests)
                    seconds = first - running.started_at
                    break
                time.sleep(0.02)
        finally:
            # First signal drains, the second leaves in-flight requests for a later run;
            # a run that does not stop within 20 s after that is killed (and reported).
            for _ in range(2):
                if running.alive():
                    running.signal(signal.SIGINT)
                    time.sleep(1.0)
            measured = running.finish(20, kill_ok=True)
    return {
        "resume_to_first_submit_s": None if seconds is None else round(seconds, 3),
        "resume_exit_code": measured.returncode,
        # Killed by the bench (SIGTERM/SIGKILL after 20 s) rather than by its own signals.
        "resume_stopped_by_two_sigints": measured.returncode
        not in (-signal.SIGTERM, -signal.SIGKILL),
        "resume_peak_rss_mb": round(measured.maxrss_mb, 1),
    }


def scale_point(work: Path, jobs: int, *, limit: int, seed: int, timeout: float) -> dict[str, Any]:
    """plan, resume and status figures at ``jobs`` jobs."""
    load = workload.library(work, jobs)
    planned = measure(
        python("-m", "runner", "plan", str(load.manifest)),
        cwd=work,
        log=work / "plan.log",
        timeout=timeout,
    )
    if planned.returncode != 0:
        raise RuntimeError(f"plan failed, see {work / 'plan.log'}")
    again = measure(
        python("-m", "runner", "plan", str(load.manifest)),
        cwd=work,
        log=work / "plan-again.log",
        timeout=timeout,
    )
    done = _build_state_apart(work, load.manifest, timeout)
    status = measure(
        python("-m", "runner", "status", str(load.manifest)),
        cwd=work,
        log=work / "status.log",
        timeout=timeout,
    )
    resume = first_submit(work, load.manifest, limit=limit, seed=seed, timeout=timeout)
    return {
        "jobs": load.jobs,
        "plan_s": round(planned.wall, 3),
        "plan_cpu_s": round(planned.cpu, 3),
        "plan_peak_rss_mb": round(planned.maxrss_mb, 1),
        "plan_again_s": round(again.wall, 3),
        "state_done_jobs": done,
        "status_s": round(status.wall, 3),
        "status_peak_rss_mb": round(status.maxrss_mb, 1),
        "status_exit_code": status.returncode,
        **resume,
    }
