"""A real-looking footage library through the real CLI: bad files stop a plan with a way out
(``--skip-bad``, ``on_bad_source: skip``), are skipped and listed when asked, never stop a
selection that leaves them out; ids keep Unicode letters; one stem under two extensions is
reported with both paths and an id to use; identical bytes are one job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import runner.manifest
from runner.plan import Plan, cached_plan

from .conftest import Emulator, run_cli
from .library_media import Library, make_library


@pytest.fixture
def library(tmp_path: Path) -> Library:
    """The issue's library: Unicode names, a copy, A001 twice, four files that cannot be used."""
    return make_library(tmp_path)


def _json(done: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def test_a_bad_file_stops_plan_and_run_and_says_how_to_skip(
    library: Library, emulator: Emulator
) -> None:
    """By default every unusable file is named with its line and reason, exit 2, nothing sent,
    and the message says how to skip them."""
    out = library.root / "out"
    for command in (["plan"], ["run", "--fal-url", emulator.url, "--output-dir", str(out)]):
        done = run_cli(*command[:1], library.manifest, *command[1:], cwd=library.root)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        for name, phrase in library.bad.items():
            line = next(x for x in done.stderr.splitlines() if f"lib/{name}: " in x)
            assert f"{library.manifest}:5: clips[0]: lib/{name}: " in line
            assert phrase in line, line
        assert "--skip-bad (or on_bad_source: skip in the manifest)" in done.stderr
    assert emulator.stats()["submits"] == 0 and emulator.stats()["uploads"] == 0
    assert not out.exists()


def test_skip_bad_plans_and_renders_the_good_ones(library: Library, emulator: Emulator) -> None:
    """--skip-bad renders every usable clip under its Unicode id, each distinct file uploaded
    once, lists every skipped file with its reason in plan, run and status, and exits 1."""
    out = library.root / "out"
    planned = run_cli("plan", library.manifest, "--skip-bad", "--json", cwd=library.root)
    assert planned.returncode == 1, planned.stderr
    summary = _json(planned)
    assert {s["path"] for s in summary["skipped"]} == {f"lib/{n}" for n in library.bad}
    assert {j["clip"] for j in summary["jobs"]} == set(library.good)
    [copy] = summary["duplicates"]
    assert (copy["path"], copy["same_as_path"], copy["jobs"]) == (
        "lib/東京_copy.mp4",
        "lib/東京.mp4",
        2,
    )
    text = run_cli("plan", library.manifest, "--skip-bad", cwd=library.root).stdout
    assert "lib/東京_copy.mp4 holds the same bytes as lib/東京.mp4: its 2 job(s) are 東京's" in text

    run = run_cli(
        "run", library.manifest, "--skip-bad", "--fal-url", emulator.url, "--output-dir", out,
        cwd=library.root,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    for name, phrase in library.bad.items():
        assert any(f"left out lib/{name}" in x and phrase in x for x in run.stderr.splitlines())
    assert "4 source(s) were left out" in run.stderr
    stats = emulator.stats()
    assert stats["submits"] == 2 * len(library.good)
    assert stats["uploads"] == len(library.good), "the copy is the same upload"
    rendered = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4"))
    assert rendered == sorted(f"{i}/{p}.mp4" for i in library.good for p in ("noir", "sepia"))

    status = run_cli("status", library.manifest, "--output-dir", out, "--json", cwd=library.root)
    assert status.returncode == 0, status.stderr
    assert {s["path"] for s in _json(status)["skipped"]} == {f"lib/{n}" for n in library.bad}
    shown = run_cli("status", library.manifest, "--output-dir", out, cwd=library.root).stdout
    assert "left out lib/long.mp4 (clips[0]): 12 s long" in shown


def test_on_bad_source_skip_in_the_manifest(tmp_path: Path) -> None:
    """`on_bad_source: skip` plans the rest without the flag (and exits 1 to say so)."""
    library = make_library(tmp_path, on_bad_source="skip")
    done = run_cli("plan", library.manifest, "--json", cwd=library.root)
    assert done.returncode == 1, done.stderr
    assert len(_json(done)["skipped"]) == len(library.bad)


def test_a_selection_that_leaves_bad_files_out_plans_strictly(library: Library) -> None:
    """--only/--exclude apply before the media checks: a bad file deselected never stops it."""
    only = run_cli("plan", library.manifest, "--only", "東京", "--only", "大阪", "--json")
    assert only.returncode == 0, only.stderr
    assert _json(only)["skipped"] == [] and len(_json(only)["jobs"]) == 4
    exclude = run_cli(
        "plan", library.manifest, "--exclude", "clip=notes", "--exclude", "clip=cut",
        "--exclude", "clip=long", "--exclude", "clip=A001", "--json",
    )  # fmt: skip
    assert exclude.returncode == 0, exclude.stderr
    assert {j["clip"] for j in _json(exclude)["jobs"]} == {"東京", "大阪", "Café_Night"}
    partly = run_cli("plan", library.manifest, "--only", "clip=long", "--only", "prompt=noir")
    assert partly.returncode == 2
    assert "selects lib/long.mp4, left out: 12 s long" in partly.stderr
    assert "lib/notes.mp4" not in partly.stderr


def test_same_stem_two_extensions_names_both_and_the_suggested_id_works(
    library: Library,
) -> None:
    """A001.mp4 beside A001.mov: both paths and an id to give it; listing it on its own
    with that id (the glob then leaves it) plans it."""
    done = run_cli("plan", library.manifest, "--skip-bad", "--json", cwd=library.root)
    [collision] = [s for s in _json(done)["skipped"] if s["path"] == "lib/A001.mp4"]
    assert "lib/A001.mov" in collision["reason"] and collision["suggested_id"] == "A001_mp4"
    assert "- {path: lib/A001.mp4, id: A001_mp4}" in collision["reason"]
    text = library.manifest.read_text().replace(
        'clips: ["lib/*"]', 'clips: ["lib/*", {path: lib/A001.mp4, id: A001_mp4}]'
    )
    library.manifest.write_text(text)
    again = _json(run_cli("plan", library.manifest, "--skip-bad", "--json", cwd=library.root))
    assert {"A001", "A001_mp4"} <= {j["clip"] for j in again["jobs"]}
    assert "lib/A001.mp4" not in {s["path"] for s in again["skipped"]}


def test_ids_differing_only_in_case_or_unsafe_characters_collide(tmp_path: Path) -> None:
    """`Take 1.mp4` and `Take_1.mp4` make one id, `shot.mp4` and `SHOT.mp4` would share files
    on macOS: the later of each pair is skipped with both paths named."""
    from .library_media import write_clip

    for n, name in enumerate(("Take 1.mp4", "Take_1.mp4", "shot.mp4", "SHOT.MP4")):
        write_clip(tmp_path / name, 1, (40 * n, 90, 90))
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "name: m\nendpoint: luma/agent/ray/v3.2/video-to-video\nclips: ['*.[mM][pP]4']\n"
        "prompts: {a: b}\n"
    )
    summary = _json(run_cli("plan", manifest, "--skip-bad", "--json"))
    reasons = {s["path"]: s["reason"] for s in summary["skipped"]}
    assert set(reasons) == {"Take_1.mp4", "shot.mp4"}
    assert reasons["Take_1.mp4"].startswith("its id 'Take_1' is already Take 1.mp4's")
    assert "differs from 'SHOT' only in case" in reasons["shot.mp4"]
    assert {j["clip"] for j in summary["jobs"]} == {"Take_1", "SHOT"}


def test_status_reads_the_skipped_files_from_the_remembered_plan(
    library: Library, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The skipped list is part of the remembered plan: a later command gets it without
    planning the manifest again; a missing file named on its own that appears is planned."""
    first = cached_plan(library.manifest)
    monkeypatch.setattr(runner.manifest, "plan", _refuse)
    again = cached_plan(library.manifest)
    assert again.skipped == first.skipped and len(again.skipped) == 4
    assert again.duplicates == first.duplicates and again.bad_source_error() is not None
    monkeypatch.undo()

    missing = library.root / "one.yaml"
    missing.write_text(
        "name: one\nendpoint: luma/agent/ray/v3.2/video-to-video\nprompts: {a: b}\n"
        "clips: [lib/東京.mp4, lib/later.mp4]\n"
    )
    [gone] = cached_plan(missing).skipped
    assert (gone.path, gone.reason, gone.field) == (
        "lib/later.mp4",
        "no such file",
        "clips[1].path",
    )
    (library.root / "lib" / "later.mp4").write_bytes(
        (library.root / "lib" / "大阪.mp4").read_bytes()
    )
    assert cached_plan(missing).skipped == ()


def _refuse(*args: object, **kwargs: object) -> Plan:
    raise AssertionError("the manifest was planned again")
