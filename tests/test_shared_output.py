"""Two manifests sharing one output directory keep their own results.jsonl and review page;
one manifest alone keeps the plain names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .conftest import Emulator, run_cli


def _lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_manifests_sharing_a_dir_do_not_overwrite_each_other(
    demo: Path, emulator: Emulator
) -> None:
    """demo alone writes results.jsonl and index.html; when `other` runs into the same dir,
    each has results.<name>.jsonl and index.<name>.html (demo's plain files renamed), and
    `report` writes the manifest's own page."""
    out = demo.parent / "shared"
    other = demo.parent / "other.yaml"
    text = demo.read_text().replace("name: demo", "name: other")
    other.write_text(text.split("prompts:")[0] + 'prompts:\n  ink: "ink wash painting"\n')
    first = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    assert first.returncode == 0, first.stderr
    assert len(_lines(out / "results.jsonl")) == 9 and (out / "index.html").exists()

    second = run_cli("run", other, "--fal-url", emulator.url, "--output-dir", out)
    assert second.returncode == 0, second.stderr
    assert not (out / "results.jsonl").exists() and not (out / "index.html").exists()
    demo_results, other_results = (
        _lines(out / "results.demo.jsonl"),
        _lines(out / "results.other.jsonl"),
    )
    assert {r["prompt"] for r in demo_results} == {"noir", "sepia", "neon"}
    assert {r["prompt"] for r in other_results} == {"ink"} and len(other_results) == 3
    assert "ink wash painting" in (out / "index.other.html").read_text()
    assert "ink wash painting" not in (out / "index.demo.html").read_text()

    (out / "index.demo.html").unlink()
    report = run_cli("report", demo, "--output-dir", out)
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip() == f"wrote {out / 'index.demo.html'}"
    again = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    assert again.returncode == 0, again.stderr
    assert len(_lines(out / "results.demo.jsonl")) == 9 and not (out / "results.jsonl").exists()


def test_namesakes_from_two_folders_are_told_apart(demo: Path, emulator: Emulator) -> None:
    """Two manifests both named demo (in two folders) get results.demo-<digest>.jsonl each."""
    out = demo.parent / "shared"
    twin_dir = demo.parent / "twin"
    shutil.copytree(demo.parent / "media", twin_dir / "media")
    twin = twin_dir / "demo.yaml"
    twin.write_text(demo.read_text().replace("neon:", "neon2:"))
    for manifest in (demo, twin):
        done = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out)
        assert done.returncode == 0, done.stderr
    named = sorted(p.name for p in out.glob("results.*.jsonl"))
    assert len(named) == 2 and all(n.startswith("results.demo-") for n in named), named
