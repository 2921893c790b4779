"""The Python API (``import raybatch``), driven as a notebook drives it: cells run one after
another on an event loop that stays running, against a real emulator over loopback."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import types
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import raybatch
import runner
from runner.errors import ManifestError

from .conftest import TEST_KEY, Emulator
from .library_media import make_library
from .test_public_surface import public_names

T = TypeVar("T")


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    """FAL_KEY in the environment, as a notebook user exports it."""
    monkeypatch.setenv("FAL_KEY", TEST_KEY)


class Notebook:
    """An asyncio loop kept running between cells, like Jupyter's kernel."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def cell(self, body: Coroutine[Any, Any, T]) -> T:
        """Run one cell's code (a coroutine: the loop is running while it executes)."""
        return self.loop.run_until_complete(body)

    def close(self) -> None:
        """Shut the kernel down."""
        self.loop.close()


@pytest.fixture
def notebook() -> Iterator[Notebook]:
    """A fresh notebook kernel."""
    book = Notebook()
    try:
        yield book
    finally:
        book.close()


@pytest.mark.parametrize("package", [runner, raybatch])
def test_the_public_surface_is_exactly_all(package: types.ModuleType) -> None:
    """Both import names expose exactly ``__all__`` (httpx-style), the same objects, each
    documented."""
    assert public_names(package) | {"__version__"} == set(package.__all__)
    for name in package.__all__:
        assert getattr(package, name) is getattr(runner, name)
        value = getattr(package, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), name
    assert {"plan", "run", "run_async", "status", "PlanSummary", "RunResult"} <= set(
        package.__all__
    )


def test_plan_stays_the_function_once_the_plan_package_is_imported() -> None:
    """runner.plan (the subpackage) loaded by a command never replaces runner.plan, the API
    function, on either import name."""
    importlib.import_module("runner.session")
    importlib.import_module("runner.plan")
    for package in (runner, raybatch):
        assert inspect.isfunction(package.plan)
        assert package.plan.__module__ == "runner._api"


def test_a_notebook_plans_runs_and_reads_status(
    demo: Path, emulator: Emulator, notebook: Notebook, key: None
) -> None:
    """Cell by cell on a running loop: plan, run (blocking, in its own thread), status, the
    results file, a rerun that pays nothing, and an awaited run_async of a new prompt."""
    out = demo.parent / "out"

    async def plan_cell() -> raybatch.PlanSummary:
        return raybatch.plan(demo, output_dir=out)

    summary = notebook.cell(plan_cell())
    assert (summary.name, summary.jobs, summary.done) == ("demo", 9, 0)
    assert summary.estimated_cost == pytest.approx(6.48) and summary.skipped == ()
    assert summary.data["total"]["jobs"] == 9

    async def run_cell() -> raybatch.RunResult:
        return raybatch.run(demo, fal_url=emulator.url, output_dir=out, max_cost=10)

    result = notebook.cell(run_cell())
    assert result.ok and (result.done, result.failed) == (9, 0)
    assert result.spent_this_run == pytest.approx(6.48) and result.exit_code == 0
    assert result.results == out / "results.jsonl" and result.review_page.exists()
    assert len(result.results.read_text().splitlines()) == 9
    assert (out / "run.log").exists(), "the run log is written without a terminal too"

    async def status_cell() -> dict[str, Any]:
        return raybatch.status(demo, output_dir=out)

    assert notebook.cell(status_cell())["total"] == {"done": 9}
    again = notebook.cell(run_cell())
    assert again.ok and again.spent_this_run == 0 and emulator.stats()["submits"] == 9

    demo.write_text(demo.read_text() + '  ink: "ink wash painting"\n')
    ticks = 0

    async def async_cell() -> raybatch.RunResult:
        nonlocal ticks

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.05)

        beat = asyncio.create_task(ticker())
        try:
            return await raybatch.run_async(demo, fal_url=emulator.url, output_dir=out)
        finally:
            beat.cancel()

    added = notebook.cell(async_cell())
    assert added.ok and emulator.stats()["submits"] == 12
    assert ticks > 3, "the notebook's loop kept running while the batch ran"
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 12


def test_the_api_raises_the_error_tree_and_never_exits(
    demo: Path, emulator: Emulator, tmp_path: Path, key: None
) -> None:
    """Mistakes raise ManifestError (never SystemExit) and submit nothing; sources that
    cannot be used raise unless skip_bad, which runs the rest and says so."""
    out = tmp_path / "out"
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\npromts: {a: b}\n")
    with pytest.raises(ManifestError, match="did you mean 'prompts'"):
        raybatch.plan(broken)
    with pytest.raises(ManifestError, match="--concurrency must be at least 1"):
        raybatch.run(demo, fal_url=emulator.url, output_dir=out, concurrency=0)
    with pytest.raises(ManifestError, match=r"above --max-cost \$1.00"):
        raybatch.run(demo, fal_url=emulator.url, output_dir=out, max_cost=1)
    with pytest.raises(ManifestError, match="matches no clip or prompt"):
        raybatch.status(demo, only=["citty"])
    assert emulator.stats()["submits"] == 0

    library = make_library(tmp_path / "library")
    with pytest.raises(ManifestError, match="--skip-bad"):
        raybatch.plan(library.manifest)
    skipped = raybatch.plan(library.manifest, skip_bad=True)
    assert {s.path for s in skipped.skipped} == {f"lib/{name}" for name in library.bad}
    result = raybatch.run(
        library.manifest, fal_url=emulator.url, output_dir=tmp_path / "lib-out", skip_bad=True
    )
    assert (result.done, result.exit_code, result.ok) == (8, 1, False)
    assert len(result.skipped) == len(library.bad)
