"""``--only``/``--exclude`` through the real CLI: fields, AND across fields, OR within one,
matrix values, typos refused with the known ids, and results that a selection never shrinks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .conftest import Emulator, run_cli

MATRIX = "matrix:\n  edit_strength: [adhere_2, flex_1]\n"


def _plan(manifest: Path, *extra: str) -> list[tuple[str, str, str | None]]:
    """(clip, prompt, edit_strength) of each job ``plan --json`` lists for the selection."""
    done = run_cli("plan", manifest, "--json", *extra)
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return sorted(
        (job["clip"], job["prompt"], job.get("labels", {}).get("edit_strength"))
        for job in summary["jobs"]
    )


def _with_matrix(demo: Path) -> Path:
    text = demo.read_text().replace("  edit_strength: flex_2\n", "")
    text = text.replace(
        'output: "{clip}/{prompt}.mp4"', 'output: "{clip}/{prompt}-{edit_strength}.mp4"'
    )
    demo.write_text(text + MATRIX)
    return demo


def test_bare_globs_on_two_fields_select_their_product(demo: Path) -> None:
    """`--only city --only noir` is city × noir (one job), not city OR noir (five)."""
    assert _plan(demo, "--only", "city", "--only", "noir") == [("city", "noir", None)]
    assert _plan(demo, "--only", "noir", "--only", "city") == [("city", "noir", None)]
    # Two globs on one field are alternatives.
    assert [j[:2] for j in _plan(demo, "--only", "city", "--only", "beach", "--only", "noir")] == [
        ("beach", "noir"),
        ("city", "noir"),
    ]


def test_fields_and_matrix_values_select(demo: Path) -> None:
    """clip=, prompt= and a matrix field select; AND across fields, OR within one."""
    manifest = _with_matrix(demo)
    flex = _plan(manifest, "--only", "edit_strength=flex_1")
    assert len(flex) == 9 and {j[2] for j in flex} == {"flex_1"}
    assert _plan(
        manifest, "--only", "edit_strength=flex*", "--only", "clip=city", "--only", "prompt=n*"
    ) == [
        ("city", "neon", "flex_1"),
        ("city", "noir", "flex_1"),
    ]
    both = _plan(
        manifest, "--only", "prompt=noir", "--only", "prompt=sepia", "--only", "image=beach"
    )
    assert [j[:2] for j in both] == [("beach", "noir")] * 2 + [("beach", "sepia")] * 2
    assert len(_plan(manifest, "--only", "take=1")) == 18


def test_exclude_removes_what_its_terms_describe(demo: Path) -> None:
    """--exclude reads like --only: terms on one field are alternatives, fields combine."""
    manifest = _with_matrix(demo)
    no_city_noir = _plan(manifest, "--exclude", "clip=city", "--exclude", "prompt=noir")
    assert len(no_city_noir) == 16 and ("city", "noir", "flex_1") not in no_city_noir
    two_clips = _plan(manifest, "--exclude", "city", "--exclude", "beach")
    assert {j[0] for j in two_clips} == {"forest"}
    assert _plan(
        manifest,
        "--only",
        "forest",
        "--exclude",
        "edit_strength=adhere_2",
        "--exclude",
        "prompt=neon",
    ) == [
        ("forest", "neon", "flex_1"),
        ("forest", "noir", "adhere_2"),
        ("forest", "noir", "flex_1"),
        ("forest", "sepia", "adhere_2"),
        ("forest", "sepia", "flex_1"),
    ]


def test_a_selection_matching_nothing_is_exit_2_with_the_known_ids(demo: Path) -> None:
    """A typo'd glob, field or value exits 2 naming what exists; nothing runs or is written."""
    out = demo.parent / "out"
    typo = run_cli("run", demo, "--only", "citty", "--output-dir", out, key=None)
    assert typo.returncode == 2
    assert "--only 'citty' matches no clip or prompt; did you mean 'city'?" in typo.stderr
    assert "clip: beach, city, forest; prompt: neon, noir, sepia" in typo.stderr
    assert not out.exists()

    field = run_cli("plan", _with_matrix(demo), "--only", "edit_strenght=flex_1")
    assert field.returncode == 2
    assert "no field 'edit_strenght'; did you mean 'edit_strength'?" in field.stderr
    assert "fields: clip, prompt, take, edit_strength" in field.stderr

    value = run_cli("status", demo, "--exclude", "edit_strength=flex_3")
    assert value.returncode == 2
    assert "--exclude 'edit_strength=flex_3' matches no edit_strength value" in value.stderr
    assert "edit_strength: adhere_2, flex_1" in value.stderr

    empty = run_cli("plan", demo, "--only", "city", "--exclude", "city")
    assert empty.returncode == 2
    assert "--only city --exclude city selects no job of 18" in empty.stderr
    assert "Traceback" not in empty.stderr + value.stderr + field.stderr + typo.stderr


def test_a_selection_never_shrinks_results_or_the_review_page(
    demo: Path, emulator: Emulator
) -> None:
    """After a full run, `run --only city` and `report --only noir` keep every job in
    results.jsonl and index.html; `run --only <typo>` leaves both untouched."""
    out = demo.parent / "out"
    whole = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    assert whole.returncode == 0, whole.stderr
    results, page = out / "results.jsonl", out / "index.html"
    assert len(results.read_text().splitlines()) == 9

    again = run_cli("run", demo, "--only", "city", "--fal-url", emulator.url, "--output-dir", out)
    assert again.returncode == 0, again.stderr
    assert len(results.read_text().splitlines()) == 9
    assert page.read_text().count('<article class="job') == 9

    before = (results.read_bytes(), page.read_bytes())
    typo = run_cli("run", demo, "--only", "ciyt", "--fal-url", emulator.url, "--output-dir", out)
    assert typo.returncode == 2 and "did you mean 'city'" in typo.stderr
    assert (results.read_bytes(), page.read_bytes()) == before

    report = run_cli("report", demo, "--only", "noir", "--output-dir", out)
    assert report.returncode == 0, report.stderr
    assert page.read_text().count('<article class="job') == 9
    assert emulator.stats()["submits"] == 9
