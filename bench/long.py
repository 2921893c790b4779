"""``python -m bench.long``: the makespan of a library of long clips under chain continuity
(issue 12), run by hand: the critical-path-first feeder against FIFO.

A library of short-ish clips and one long one (listed last, the worst place for a
first-come feeder) is planned by the real planner with ``continuity: chain``: every
clip's renders form a chain (look → render 0 → its frame → render 1 → ... → stitch),
chains run in parallel across clips. The real scheduler runs that graph in-process,
with its real state file and writer, against a fal whose requests take a fixed time:

- a render takes ``--render-seconds`` (default 0.25) per second of video it renders, a
  Uni-1 edit ``--edit-seconds`` (0.25), queued FIFO behind the account's limit
  (``--slots``, 4) as fal queues them (real renders take minutes and local steps
  seconds: at these scales the engine's own overhead per link, a few tens of ms, is
  already a larger share than it would be);
- local steps sleep a fixed time (cut 0.05 s, frame 0.02 s, stitch 0.1 s) and write a
  small file: this bench measures scheduling, ``bench.media`` the media work.

The graph's lower bound is max(total remote time ÷ slots, longest chain), the chain
counting remote and local time along the heaviest path. Both feeders run the same plan
on a fresh state; the figure is makespan ÷ lower bound. Writes ``<out>/long.json`` and
``<out>/long.md`` (default ``bench/results``); ``--quick`` runs a tiny library.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np

from runner.job import JobSpec
from runner.manifest import plan
from runner.pipeline import LocalJob, LocalStep
from tests.fakefal import FakeFal, Request, reply, run_jobs

from .run import machine

ORDERS = ("critical-path", "fifo")
#: Seconds a local step takes here, by endpoint.
LOCAL_SECONDS = {"local/cut": 0.05, "local/frame": 0.02, "local/stitch": 0.1}


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


def lower_bound(jobs: list[JobSpec], fal: TimedFal, slots: int) -> dict[str, float]:
    """max(total remote time ÷ slots, longest chain) of this graph at these times."""
    seconds: dict[str, float] = {}
    for spec in jobs:
        if spec.kind == "local":
            seconds[spec.key] = LOCAL_SECONDS[spec.endpoint]
        else:
            seconds[spec.key] = fal._seconds(Request("", spec.endpoint, dict(spec.arguments)))
    chain: dict[str, float] = {}
    for spec in jobs:  # the plan lists parents before children
        chain[spec.key] = seconds[spec.key] + max((chain[p] for p in spec.parents), default=0.0)
    remote = sum(seconds[s.key] for s in jobs if s.kind == "remote")
    longest = max(chain.values())
    return {
        "remote_seconds": remote,
        "longest_chain": longest,
        "bound": max(remote / slots, longest),
    }


async def _run(
    jobs: list[JobSpec], order: str, slots: int, service: dict[str, float]
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
            concurrency=slots,
            queue_buffer=slots,
            local_workers=2,
            watch="poll",
            poll_initial=0.01,
            poll_max=0.01,
            ready_order=order,
        )
        makespan = time.monotonic() - started
        store.close()
    bound = lower_bound(jobs, fal, slots)
    return {
        "order": order,
        "jobs": len(jobs),
        "done": summary.done,
        "makespan": round(makespan, 3),
        **{k: round(v, 3) for k, v in bound.items()},
        "ratio": round(makespan / bound["bound"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Run both feeders on one library and print the table."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.long", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a tiny library: checks the harness")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--short", type=int, default=12, help="clips of 25 s before the long one")
    parser.add_argument("--long", type=int, default=95, help="the last clip's length (s)")
    parser.add_argument("--render-seconds", type=float, default=0.25)
    parser.add_argument("--edit-seconds", type=float, default=0.25)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    lengths = [25] * (2 if args.quick else args.short) + [30 if args.quick else args.long]
    service = {"render": args.render_seconds, "edit": args.edit_seconds}
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
        jobs = list(plan(manifest).jobs)
        results = [asyncio.run(_run(jobs, order, args.slots, service)) for order in ORDERS]
    figures = {"machine": machine(), "slots": args.slots, "lengths": lengths, "service": service,
               "runs": results}  # fmt: skip
    table = [
        "| feeder | jobs | makespan s | remote s ÷ slots | longest chain s | bound s | ratio |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['order']} | {r['jobs']} | {r['makespan']:.2f}"
            f" | {r['remote_seconds'] / args.slots:.2f} | {r['longest_chain']:.2f}"
            f" | {r['bound']:.2f} | {r['ratio']:.3f} |"
            for r in results
        ),
    ]
    out = args.out / "quick" if args.quick else args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "long.json").write_text(json.dumps(figures, indent=2) + "\n")
    (out / "long.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
