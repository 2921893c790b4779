"""A chain's next link keeps its place at fal: when a remote job's result is in and the job
that continues its chain is the most urgent work, its place is kept for that job, and a
graph with chains keeps no queue at fal (so the kept place is free there).

The engine runs directly on the scripted fal of ``tests/fakefal.py``, with a test step
standing for the frame extracted between two renders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.job import JobSpec, job_key, parent_ref
from runner.pipeline import LocalJob

from .fakefal import ENDPOINT, FakeFal, run_jobs

pytestmark = pytest.mark.anyio

FRAME = "local/frame"


def _frame(job: LocalJob) -> None:
    """A test step: the parent's file, renamed."""
    job.output.write_bytes(Path(job.arguments["video_url"]).read_bytes())


def _render(name: str, start: str | None = None, weight: float = 10.0) -> JobSpec:
    arguments: dict[str, Any] = {"prompt": name, "duration": "5s", "resolution": "540p"}
    if start is not None:
        arguments["image_url"] = parent_ref(start)
    return JobSpec(
        job_key(ENDPOINT, arguments), ENDPOINT, arguments, f"{name}.mp4", prompt=name,
        estimated_cost=0.5, parents=(start,) if start else (), weight=weight,
    )  # fmt: skip


def _frame_of(render: JobSpec) -> JobSpec:
    arguments = {"video_url": parent_ref(render.key), "at": "last"}
    return JobSpec(
        job_key(FRAME, arguments), FRAME, arguments, f"{render.prompt}.png",
        prompt=f"{render.prompt}-frame", parents=(render.key,),
    )  # fmt: skip


def _chain(links: int) -> list[JobSpec]:
    """Renders a0 → frame → a1 → frame → ... (each render starts from the frame before)."""
    jobs = [_render("a0")]
    for n in range(1, links):
        frame = _frame_of(jobs[-1])
        jobs += [frame, _render(f"a{n}", frame.key)]
    return jobs


class _Watch:
    """Counts requests at fal (submitted, result not yet fetched), keeping the peak."""

    def __init__(self, fal: FakeFal) -> None:
        self.at_fal = self.peak = 0
        fal.on_call = self

    def __call__(self, op: str, request: httpx.Request) -> None:
        if op == "submit":
            self.at_fal += 1
            self.peak = max(self.peak, self.at_fal)
        elif op == "result":
            self.at_fal -= 1


async def test_a_chains_next_render_takes_the_place_its_predecessor_held(tmp_path: Path) -> None:
    """One place at fal, a chain of three renders and six short jobs: the chain's renders
    go one after the other, none of the short jobs slipping in between though they were
    ready first; no request ever waits at fal in a queue."""
    chain = _chain(3)
    shorts = [_render(f"b{n}", weight=1.0) for n in range(6)]
    fal = FakeFal()
    watch = _Watch(fal)
    summary, store = await run_jobs(
        tmp_path, fal, [*shorts, *chain], local_steps={FRAME: _frame}, concurrency=1
    )
    store.close()
    assert summary.done == len(shorts) + len(chain) and summary.failed == 0
    order = [request.arguments["prompt"] for request in fal.requests.values()]
    assert order[:3] == ["a0", "a1", "a2"], order
    assert watch.peak == 1, "a queue at fal would put the chain behind other requests"


async def test_a_chain_keeps_its_place_against_a_job_with_as_much_left(tmp_path: Path) -> None:
    """A chain's last render has as much work left as each single render waiting: the
    place stays with the chain (the longer whole path), not with the singles listed first."""
    chain = _chain(2)
    singles = [_render(f"b{n}") for n in range(3)]
    fal = FakeFal()
    summary, store = await run_jobs(
        tmp_path, fal, [*singles, *chain], local_steps={FRAME: _frame}, concurrency=1
    )
    store.close()
    assert summary.done == len(singles) + len(chain)
    order = [request.arguments["prompt"] for request in fal.requests.values()]
    assert order[:2] == ["a0", "a1"], order


async def test_without_chains_the_queue_at_fal_is_kept(tmp_path: Path) -> None:
    """Independent jobs keep the usual queue at fal beyond the concurrency (a buffer), so a
    freed place is refilled at once."""
    fal = FakeFal()
    watch = _Watch(fal)
    summary, store = await run_jobs(
        tmp_path, fal, [_render(f"b{n}", weight=1.0) for n in range(8)], concurrency=1
    )
    store.close()
    assert summary.done == 8
    assert watch.peak > 1


async def test_fifo_order_lets_ready_jobs_in_between_a_chains_links(tmp_path: Path) -> None:
    """With the ready queue in plan order (the bench's comparison), short jobs listed first
    go before the chain's later links: the chain waits for them."""
    chain = _chain(3)
    shorts = [_render(f"b{n}", weight=1.0) for n in range(6)]
    fal = FakeFal()
    summary, store = await run_jobs(
        tmp_path, fal, [*shorts, *chain], local_steps={FRAME: _frame}, concurrency=1,
        ready_order="fifo",
    )  # fmt: skip
    store.close()
    assert summary.done == len(shorts) + len(chain)
    order = [request.arguments["prompt"] for request in fal.requests.values()]
    assert order.index("a2") > order.index("b0")
