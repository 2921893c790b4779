"""Remembered plans (runner/plan/_cache.py): used only while everything they were made from
is unchanged, equal to a fresh plan, private, and never a reason for a command to fail."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

import runner.manifest
from runner.plan import Plan, _cache as plan_cache, cache_dir, cached_plan

from .conftest import TEST_KEY, run_cli, start_emulator, stop_emulator


def _facts(plan: Plan) -> list[tuple[Any, ...]]:
    """Everything a plan says about its jobs, comparable across plans."""
    return [
        (
            s.key,
            s.endpoint,
            dict(s.arguments),
            s.output,
            {sha: (str(f.path), f.sha256, f.size, f.content_type) for sha, f in s.files.items()},
            s.clip,
            s.prompt,
            dict(s.labels),
            s.estimated_cost,
        )
        for s in plan.jobs
    ]


def _no_replanning(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, expanding a manifest fails the test: plans must come from the cache."""

    def refuse(*args: object, **kwargs: object) -> Plan:
        raise AssertionError("the manifest was planned again")

    monkeypatch.setattr(runner.manifest, "plan", refuse)


@pytest.fixture
def globbed(tmp_path: Path) -> Path:
    """A manifest with a glob of local clips, a matrix and a local image input."""
    media = Path(__file__).parent.parent / "manifests" / "media"
    (tmp_path / "clips").mkdir()
    for name in ("city", "beach"):
        shutil.copy(media / f"{name}.mp4", tmp_path / "clips" / f"{name}.mp4")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "name: globbed\n"
        "endpoint: luma/agent/ray/v3.2/video-to-video\n"
        'output: "{clip}/{prompt}-{resolution}.mp4"\n'
        "defaults: {duration: 5s}\n"
        "clips: ['clips/*.mp4']\n"
        "prompts: {noir: 'film noir', warm: 'warm light'}\n"
        "matrix: {resolution: [540p, 720p]}\n"
    )
    return manifest


def test_a_remembered_plan_equals_the_fresh_one(
    globbed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second plan of an unchanged manifest comes from the cache, job for job equal."""
    fresh = cached_plan(globbed)
    _no_replanning(monkeypatch)
    again = cached_plan(globbed)
    assert len(fresh) == 8 and _facts(again) == _facts(fresh)
    assert again.limits_applied == fresh.limits_applied
    assert again.facts == fresh.facts and again.output_dir == fresh.output_dir
    assert again.fingerprint == fresh.fingerprint is not None
    assert again.clips == fresh.clips and len(again.clips) == 2


def test_equal_weights_are_one_object_in_a_remembered_plan(
    globbed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plan's equal job weights load as one float object (not one per job)."""
    cached_plan(globbed)
    _no_replanning(monkeypatch)
    weights = cached_plan(globbed).columns.weights
    assert len(weights) == 8 and len({id(w) for w in weights}) == len(set(weights)) == 1


def test_selection_and_output_dir_apply_to_a_remembered_plan(
    globbed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--only/--exclude and --output-dir select from the remembered plan like a fresh one."""
    whole = cached_plan(globbed)
    _no_replanning(monkeypatch)
    only = cached_plan(globbed, only=["city"], exclude=["warm"], output_dir=tmp_path / "o")
    assert [(s.clip, s.prompt) for s in only.jobs] == [("city", "noir")] * 2
    assert {s.key for s in only.jobs} < {s.key for s in whole.jobs}
    assert only.output_dir == tmp_path / "o" and only.fingerprint is None


def test_a_changed_clip_is_planned_again(globbed: Path) -> None:
    """Touching one byte of a clip changes its jobs' keys: the old plan is not used."""
    before = cached_plan(globbed)
    clip = globbed.parent / "clips" / "city.mp4"
    with clip.open("ab") as handle:
        handle.write(b"\0")
    after = cached_plan(globbed)
    changed = {s.key for s in after.jobs} - {s.key for s in before.jobs}
    assert len(changed) == 4 and all(s.clip == "city" for s in after.jobs if s.key in changed)
    assert _facts(after) == _facts(runner.manifest.plan(globbed))


def test_a_new_file_matching_a_glob_is_planned(globbed: Path) -> None:
    """A clip added where the manifest's glob looks adds its jobs."""
    assert len(cached_plan(globbed)) == 8
    media = Path(__file__).parent.parent / "manifests" / "media"
    shutil.copy(media / "forest.mp4", globbed.parent / "clips" / "dusk.mp4")
    assert {s.clip for s in cached_plan(globbed).jobs} == {"beach", "city", "dusk"}


def test_a_retargeted_symlink_is_planned_again(tmp_path: Path) -> None:
    """A clip named through a symlink that now points at other bytes is hashed again."""
    media = Path(__file__).parent.parent / "manifests" / "media"
    link = tmp_path / "clip.mp4"
    link.symlink_to(media / "city.mp4")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        "name: linked\nendpoint: luma/agent/ray/v3.2/video-to-video\n"
        "defaults: {duration: 5s}\nclips: [clip.mp4]\nprompts: {a: 'warm'}\n"
    )
    first = cached_plan(manifest).jobs[0].key
    link.unlink()
    link.symlink_to(media / "beach.mp4")
    assert cached_plan(manifest).jobs[0].key != first


def test_an_edited_manifest_is_planned_again(globbed: Path) -> None:
    """Any edit of the manifest, even one that keeps its size, makes a new plan."""
    cached_plan(globbed)
    globbed.write_text(globbed.read_text().replace("film noir", "film_noir"))
    assert {s.arguments["prompt"] for s in cached_plan(globbed).jobs} == {
        "film_noir",
        "warm light",
    }


def test_a_damaged_entry_is_a_miss_and_is_replaced(globbed: Path) -> None:
    """A truncated or garbled entry never fails planning: it is replanned and rewritten."""
    fresh = cached_plan(globbed)
    (entry,) = cache_dir().glob(f"{fresh.fingerprint}.plan")
    for damage in (entry.read_bytes()[:100], b"\xff" * 64, b""):
        entry.write_bytes(damage)
        assert _facts(cached_plan(globbed)) == _facts(fresh)
        assert entry.stat().st_size > 1000
    # Only the jobs' second record damaged, after the first was read: planned afresh.
    intact = entry.read_bytes()
    remembered = cached_plan(globbed)
    entry.write_bytes(intact[:-20] + b"\0" * 20)
    assert _facts(remembered) == _facts(fresh)


def test_an_entry_replaced_after_its_head_was_read_lends_it_nothing(
    globbed: Path, tmp_path: Path
) -> None:
    """Jobs read lazily after their entry was rewritten (another plan under the same name)
    come from a fresh plan, never from the other entry's columns."""
    fresh = cached_plan(globbed)
    remembered = cached_plan(globbed)  # head read; the jobs' columns not yet
    other = tmp_path / "other.yaml"
    other.write_text(globbed.read_text().replace("warm: 'warm light'", "warm: 'cold light'"))
    assert fresh.fingerprint is not None
    plan_cache._store(fresh.fingerprint, runner.manifest.plan(other))
    assert _facts(remembered) == _facts(fresh)


def test_a_cache_that_cannot_be_written_costs_nothing_but_time(
    globbed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the cache directory unusable (a file is in its place), plans still come out."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert len(cached_plan(globbed)) == len(cached_plan(globbed)) == 8


def test_entries_are_private_and_bounded(
    globbed: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Entries are 0600 in a 0700 folder, never hold the API key, and the oldest go."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("FAL_KEY", "canary-key-0123456789")
    monkeypatch.setattr(plan_cache, "KEEP", 3)
    for n in range(5):
        globbed.write_text(globbed.read_text().replace("warm light", f"warm light {n}"))
        cached_plan(globbed)
    entries = list(cache_dir().glob("*.plan"))
    assert len(entries) == 3
    assert stat.S_IMODE(cache_dir().stat().st_mode) == 0o700
    for entry in entries:
        assert stat.S_IMODE(entry.stat().st_mode) == 0o600
        assert b"canary-key" not in entry.read_bytes()


def test_status_counts_only_the_current_plan_after_an_edit(demo: Path) -> None:
    """After a prompt edit, status counts the edited plan's jobs (old rows stay in the state
    but are not this plan's); after the rerun the table's extra rows still do not count."""
    emulator = start_emulator("--job-seconds", "0.2:0.4", "--seed", "3")
    try:
        first = run_cli("run", demo, "--fal-url", emulator.url, cwd=demo.parent)
        assert first.returncode == 0, first.stderr
        demo.write_text(demo.read_text().replace("soft film grain", "heavy film grain"))
        status = run_cli("status", demo, "--json", cwd=demo.parent)
        assert '"pending": 3' in status.stdout and '"done": 6' in status.stdout
        assert '"jobs": 9' in status.stdout
        again = run_cli("run", demo, "--fal-url", emulator.url, cwd=demo.parent)
        assert again.returncode == 0, again.stderr
        assert emulator.stats()["submits"] == 12
    finally:
        stop_emulator(emulator)
    status = run_cli("status", demo, "--json", cwd=demo.parent)
    assert '"done": 9' in status.stdout and '"jobs": 9' in status.stdout
    assert TEST_KEY not in status.stdout


def test_unreadable_manifest_is_reported_not_cached(tmp_path: Path) -> None:
    """A FIFO in the manifest's place is refused by planning (no hang in fingerprinting)."""
    fifo = tmp_path / "m.yaml"
    os.mkfifo(fifo)
    result = run_cli("plan", fifo, cwd=tmp_path, timeout=30)
    assert result.returncode == 2 and "Traceback" not in result.stderr
