"""``python -m bench.long``: the makespan of a library of long clips under chain continuity
(issue 12), run by hand: the critical-path-first feeder against FIFO.

A library of short-ish clips and one long one (listed last, the worst place for a
first-come feeder) is planned by the real planner with ``continuity: chain``: every
clip's renders form a chain (look → render 0 → its frame → render 1 → ... → stitch),
chains run in parallel across clips. The real scheduler runs that graph in-process,
with its real state file and writer, against a fal whose requests take a fixed time:

- a render takes ``--render-seconds`` (default 0.8) per second of video it renders, so
  8 s for a 10 s segment, a Uni-1 edit ``--edit-seconds`` (1.0), queued FIFO behind the
  account's limit (``--slots``, 4) as fal queues them. Real renders take minutes (Ray 3.2
  through fal "typically 5–15 minutes", docs.oxen.ai via shared/reference/luma.md §5c,
  read 2026-12-04). The first figures ran at a tenth of these times (0.8 s a render),
  where the engine's fixed cost per link — a poll, a result fetch, a download, five
  state commits, a thread hop: 40–100 ms on this shared 2-core machine — was 5–12 % of
  every link and measured the machine's load more than the feeder;
- local steps sleep a fixed time (cut 0.05 s, frame 0.02 s, stitch 0.1 s) and write a
  small file, and transfers are in-process: this bench measures scheduling,
  ``bench.media`` and ``bench.transfer`` the media work and the bytes.

Bounds, from the same per-job times:

- the issue's **bound**, max(total remote time ÷ slots, longest chain), the chain adding
  remote and local times along the heaviest path (every link's frame extraction is in it;
  the transfers a real link would add are not, as none happen here);
- the **whole-render bound**: renders cannot be split across slots, so some slot runs at
  least ⌈n ÷ slots⌉ of the n remote jobs of d seconds or more, one after another, the first
  no sooner than the chain of work before it allows (look frame and look edit): the
  greatest such figure over d, or the issue's bound if that is greater. No scheduler,
  however clairvoyant, ends before it; the issue's bound assumes the remote time can be
  poured into the slots like water.

Both feeders run the same plan on a fresh state. Each is also replayed as a discrete
event simulation of the same ``Graph`` and ``Reservations`` (the feeder's own decisions,
with no engine latency at all), which splits a ratio into what the ordering costs and
what the engine's per-link latency adds; ``--sweep`` adds both feeders alone over 21
libraries, to tell the one library's luck with whole renders from the feeder's. Writes
``<out>/long.json`` and ``<out>/long.md`` (default ``bench/results``); ``--quick`` runs a
tiny library at a tenth of the times.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import json
import os
import statistics
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import av
import httpx
import numpy as np

from runner.job import JobSpec
from runner.manifest import plan
from runner.pipeline import LocalJob, LocalStep
from runner.pipeline._graph import Graph
from runner.pipeline._reserve import Reservations
from runner.plan import JobList
from tests.fakefal import FakeFal, Request, reply, run_jobs

from .run import machine

ORDERS = ("critical-path", "fifo")
#: Seconds a local step takes here, by endpoint.
LOCAL_SECONDS = {"local/cut": 0.05, "local/frame": 0.02, "local/stitch": 0.1}
#: Local steps at once (the engine's default).
LOCAL_WORKERS = 2
#: The libraries of ``--sweep``: this many clips of 25 s, and one long clip of these lengths.
SWEEP_SHORT = (6, 8, 10, 12, 14, 16, 20)
SWEEP_LONG = (65, 95, 125)


class TimedFal(FakeFal):
    """The scripted fal with time: each request runs a fixed time once one of the
    account's ``slots`` is free, first come first served, as fal queues beyond a limit."""

    def __init__(self, slots: int, service: Mapping[str, float]) -> None:
        super().__init__()
        self.slots = slots
        self.service = dict(service)  # request id -> seconds it runs
        self.queue: list[str] = []
        self.running: dict[str, float] = {}  # request id -> when it ends
        self.spans: dict[str, tuple[float, float]] = {}  # request id -> (start, end)
        self.durations: dict[str, float] = {}

    def _answer(self, op: str, request: httpx.Request) -> httpx.Response:
        if op == "submit":
            answer = super()._answer(op, request)
            rid = answer.json()["request_id"]
            self.durations[rid] = self._seconds(self.requests[rid])
            self.queue.append(rid)
            self._advance(time.monotonic())
            return answer
        return super()._answer(op, request)

    def _seconds(self, held: Request) -> float:
        endpoint = held.endpoint
        if endpoint.endswith("video-to-video"):
            return float(held.arguments["duration"].removesuffix("s")) * self.service["render"]
        return self.service["edit"]

    def _advance(self, now: float) -> None:
        """Start queued requests in the slots that freed up, at the moment they did."""
        while True:
            free_at = min(self.running.values(), default=None)
            if len(self.running) < self.slots and self.queue:
                start = now if free_at is None or len(self.running) < self.slots else free_at
                self._start(self.queue.pop(0), start)
                continue
            if free_at is None or free_at > now:
                return
            done = min(self.running, key=self.running.__getitem__)
            del self.running[done]
            if self.queue:
                self._start(self.queue.pop(0), free_at)

    def _start(self, rid: str, at: float) -> None:
        end = at + self.durations[rid]
        self.running[rid] = end
        self.spans[rid] = (at, end)

    def _status(self, held: Request, *, stream: bool) -> httpx.Response:
        now = time.monotonic()
        self._advance(now)
        span = self.spans.get(held.id)
        if span is None:
            return reply(202, {"status": "IN_QUEUE", "request_id": held.id})
        if now < span[1]:
            return reply(202, {"status": "IN_PROGRESS", "request_id": held.id})
        return reply(200, {"status": "COMPLETED", "request_id": held.id})


def _step(seconds: float) -> LocalStep:
    def step(job: LocalJob) -> None:
        time.sleep(seconds)
        job.output.write_bytes(job.spec.key.encode())

    return step


def make_library(folder: Path, lengths: list[int]) -> list[Path]:
    """Tiny clips of these lengths (seconds, 24 fps): enough for the planner to cut them."""
    paths = []
    for n, seconds in enumerate(lengths):
        path = folder / f"clip{n:02d}.mp4"
        with av.open(str(path), "w") as out:
            stream = out.add_stream("libx264", rate=24, options={"preset": "ultrafast"})
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            for index in range(seconds * 24):
                image = np.full((32, 32, 3), (index * 7 + n * 40) % 256, np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = index
                out.mux(stream.encode(frame))
            out.mux(stream.encode())
        paths.append(path)
    return paths


def plan_library(lengths: list[int]) -> list[JobSpec]:
    """The real planner's jobs for a library of clips of these lengths, chained."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_library(folder, lengths)
        manifest = folder / "library.yaml"
        manifest.write_text(
            "name: long-bench\nendpoint: luma/agent/ray/v3.2/video-to-video\n"
            'output: "{clip}/{prompt}.mp4"\ndefaults: {resolution: 540p}\n'
            "segments: {continuity: chain, length: 10s}\n"
            'clips: [{path: "clip*.mp4"}]\nprompts: {look: "film noir"}\n'
        )
        return list(plan(manifest).jobs)


def sweep(service: dict[str, float], slots: int) -> dict[str, Any]:
    """Both feeders alone (simulated) over libraries of 6 to 20 clips of 25 s and one of
    65, 95 or 125 s: how much of a ratio is the one library's luck with whole renders."""
    rows = []
    for short in SWEEP_SHORT:
        for long in SWEEP_LONG:
            jobs = plan_library([25] * short + [long])
            seconds = job_seconds(jobs, TimedFal(slots, service))
            bound = lower_bound(jobs, seconds, slots)
            row: dict[str, Any] = {"short": short, "long": long}
            for order in ORDERS:
                alone = simulate(jobs, seconds, order, slots)
                row[order] = round(alone / bound["bound"], 3)
                row[f"{order} whole-render"] = round(alone / bound["whole_render_bound"], 3)
            rows.append(row)
    return {
        "libraries": rows,
        **{
            f"{stat} {column}": round(fn(row[column] for row in rows), 3)
            for column in rows[0]
            if column not in ("short", "long")
            for stat, fn in (("median", statistics.median), ("max", max))
        },
    }


def _sweep_table(found: dict[str, Any]) -> list[str]:
    n = len(found["libraries"])
    lines = [
        f"Feeders alone (simulated) over {n} libraries ({', '.join(map(str, SWEEP_SHORT))}"
        f" clips of 25 s and one of {', '.join(map(str, SWEEP_LONG))} s):",
        "",
        "| feeder | ratio to bound, median | max | to whole-render bound, median | max |",
        "|---|---|---|---|---|",
    ]
    for order in ORDERS:
        whole = f"{order} whole-render"
        lines.append(
            f"| {order} | {found[f'median {order}']:.3f} | {found[f'max {order}']:.3f}"
            f" | {found[f'median {whole}']:.3f} | {found[f'max {whole}']:.3f} |"
        )
    return lines


def job_seconds(jobs: list[JobSpec], fal: TimedFal) -> list[float]:
    """How long each job takes here: a local step's sleep, a request's run at fal."""
    return [
        LOCAL_SECONDS[spec.endpoint]
        if spec.kind == "local"
        else fal._seconds(Request("", spec.endpoint, dict(spec.arguments)))
        for spec in jobs
    ]


def lower_bound(jobs: list[JobSpec], seconds: list[float], slots: int) -> dict[str, float]:
    """The issue's bound, max(total remote time ÷ slots, longest chain), its parts, and
    the whole-render bound (see the module docstring) of this graph at these times."""
    index = {spec.key: n for n, spec in enumerate(jobs)}
    before = [0.0] * len(jobs)  # the heaviest chain of work that must end first
    chain = [0.0] * len(jobs)
    for n, spec in enumerate(jobs):  # the plan lists parents before children
        before[n] = max((chain[index[p]] for p in spec.parents), default=0.0)
        chain[n] = before[n] + seconds[n]
    remote = [n for n, spec in enumerate(jobs) if spec.kind == "remote"]
    total = sum(seconds[n] for n in remote)
    bound = max(total / slots, max(chain))
    whole = bound
    for d in {seconds[n] for n in remote}:
        longer = [n for n in remote if seconds[n] >= d]
        earliest = min(before[n] for n in longer)
        whole = max(whole, earliest + -(-len(longer) // slots) * d)
    return {
        "remote_seconds": total,
        "longest_chain": max(chain),
        "bound": bound,
        "whole_render_bound": whole,
    }


def simulate(jobs: list[JobSpec], seconds: list[float], order: str, slots: int) -> float:
    """The makespan the feeder's own decisions give with no engine latency: the real
    ``Graph`` and ``Reservations`` driven by a clock that jumps from one job's end to the
    next (a chained graph keeps no queue at fal, so ``slots`` requests at most)."""
    graph = Graph(JobList.of(jobs), {}, fifo=order == "fifo")
    assert graph.chained
    kept = Reservations(graph, anyio.Semaphore(slots))
    free = {False: slots, True: LOCAL_WORKERS}
    ends: list[tuple[float, int]] = []
    now = 0.0

    def start(i: int) -> None:
        heapq.heappush(ends, (now + seconds[i], i))

    def feed() -> None:
        for local in (True, False):
            while free[local] and graph.has_ready(local):
                free[local] -= 1
                start(graph.pop_ready(local))

    graph.add_ready(i for i in range(len(jobs)) if i not in graph.waiting)
    feed()
    while ends:
        now, i = heapq.heappop(ends)
        local = graph.is_local(i)
        if local or not kept.keep_for_heir(i):
            free[local] += 1
        ready = graph.done(jobs[i].key)
        for child in [c for c in ready if kept.take(c)]:
            ready.remove(child)
            start(child)
        graph.add_ready(ready)
        feed()
    return now


async def _run(
    jobs: list[JobSpec], order: str, slots: int, service: dict[str, float], limit: float
) -> dict[str, Any]:
    fal = TimedFal(slots, service)
    steps = {endpoint: _step(seconds) for endpoint, seconds in LOCAL_SECONDS.items()}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        summary, store = await run_jobs(
            Path(tmp),
            fal,
            jobs,
            local_steps=steps,
            limit=limit,
            concurrency=slots,
            queue_buffer=slots,
            local_workers=LOCAL_WORKERS,
            watch="poll",
            poll_initial=0.01,
            poll_max=0.01,
            ready_order=order,
        )
        makespan = time.monotonic() - started
        store.close()
    seconds = job_seconds(jobs, fal)
    bound = lower_bound(jobs, seconds, slots)
    alone = simulate(jobs, seconds, order, slots)
    return {
        "order": order,
        "jobs": len(jobs),
        "done": summary.done,
        "makespan": round(makespan, 3),
        **{k: round(v, 3) for k, v in bound.items()},
        "ratio": round(makespan / bound["bound"], 3),
        "whole_render_ratio": round(makespan / bound["whole_render_bound"], 3),
        "simulated": round(alone, 3),
        "simulated_ratio": round(alone / bound["bound"], 3),
    }


def _table(results: list[dict[str, Any]], slots: int) -> list[str]:
    first = results[0]
    return [
        "| feeder | jobs | makespan s | ratio to bound | ratio to whole-render bound"
        " | feeder alone s (simulated) | its ratio to bound |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['order']} | {r['jobs']} | {r['makespan']:.2f} | {r['ratio']:.3f}"
            f" | {r['whole_render_ratio']:.3f} | {r['simulated']:.2f}"
            f" | {r['simulated_ratio']:.3f} |"
            for r in results
        ),
        "",
        "| remote s ÷ slots | longest chain s | bound s (issue 12) | whole-render bound s |",
        "|---|---|---|---|",
        f"| {first['remote_seconds'] / slots:.2f} | {first['longest_chain']:.2f}"
        f" | {first['bound']:.2f} | {first['whole_render_bound']:.2f} |",
    ]


def main(argv: list[str] | None = None) -> int:
    """Run both feeders on one library and print the tables."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.long", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a tiny library: checks the harness")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--short", type=int, default=12, help="clips of 25 s before the long one")
    parser.add_argument("--long", type=int, default=95, help="the last clip's length (s)")
    parser.add_argument("--render-seconds", type=float, help="per second of video (0.8)")
    parser.add_argument("--edit-seconds", type=float, help="per look edit (1.0)")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--sweep", action="store_true", help="also the feeders alone over a family of libraries"
    )
    args = parser.parse_args(argv)
    scale = 0.1 if args.quick else 1.0
    lengths = [25] * (2 if args.quick else args.short) + [30 if args.quick else args.long]
    service = {
        "render": args.render_seconds or round(0.8 * scale, 3),
        "edit": args.edit_seconds or round(1.0 * scale, 3),
    }
    jobs = plan_library(lengths)
    # A run gets ten times the slowest conceivable schedule (everything in one line).
    limit = 10 * sum(job_seconds(jobs, TimedFal(args.slots, service))) + 60
    load = os.getloadavg()
    results = [asyncio.run(_run(jobs, order, args.slots, service, limit)) for order in ORDERS]
    figures = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "load_average": {"before": [round(x, 2) for x in load],
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "slots": args.slots,
        "lengths": lengths,
        "service": service,
        "local_seconds": LOCAL_SECONDS,
        "runs": results,
    }  # fmt: skip
    table = _table(results, args.slots)
    if args.sweep:
        figures["sweep"] = sweep(service, args.slots)
        table += ["", *_sweep_table(figures["sweep"])]
    out = args.out / "quick" if args.quick else args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "long.json").write_text(json.dumps(figures, indent=2) + "\n")
    (out / "long.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
