"""A library that changes between runs, prompt-only manifests, and one spend everywhere.

Each test drives the real CLI against the emulator, as a user would.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from .conftest import MANIFESTS, Emulator, run_cli

CLIPS = ("city", "beach")


def _library(tmp_path: Path, clips: tuple[str, ...] = CLIPS) -> Path:
    """A manifest over ``lib/*.mp4`` (two prompts), with ``clips`` in ``lib/``."""
    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    for clip in clips:
        shutil.copy(MANIFESTS / "media" / f"{clip}.mp4", lib / f"{clip}.mp4")
    manifest = tmp_path / "library.yaml"
    manifest.write_text(
        "name: library\n"
        "endpoint: luma/agent/ray/v3.2/video-to-video\n"
        'output: "{clip}/{prompt}.mp4"\n'
        "output_dir: out\n"
        "defaults: {resolution: 540p, duration: 5s}\n"
        'clips: [{path: "lib/*.mp4"}]\n'
        "prompts: {noir: 'film noir', sepia: 'old sepia photograph'}\n"
    )
    return manifest


def _status(manifest: Path) -> dict[str, object]:
    shown = run_cli("status", manifest, "--json")
    assert shown.returncode == 0, shown.stderr
    summary: dict[str, object] = json.loads(shown.stdout)
    return summary


def test_a_clip_added_under_a_glob_is_rendered_next_run(tmp_path: Path, emulator: Emulator) -> None:
    """Add a clip to a globbed folder: status counts its jobs as pending, and the next run
    renders exactly those two jobs."""
    manifest = _library(tmp_path)
    first = run_cli("run", manifest, "--fal-url", emulator.url)
    assert first.returncode == 0, first.stderr
    assert emulator.stats()["submits"] == 4
    shutil.copy(MANIFESTS / "media" / "forest.mp4", tmp_path / "lib" / "forest.mp4")

    assert _status(manifest)["total"] == {"pending": 2, "done": 4}
    again = run_cli("run", manifest, "--fal-url", emulator.url)
    assert again.returncode == 0, again.stderr
    assert emulator.stats()["submits"] == 6
    assert sorted(p.name for p in (tmp_path / "out" / "forest").iterdir()) == [
        "noir.mp4",
        "sepia.mp4",
    ]
    assert _status(manifest)["total"] == {"done": 6}


def test_a_clip_re_exported_under_the_same_name_is_rendered_again(
    tmp_path: Path, emulator: Emulator
) -> None:
    """Re-export a clip under its name with new bytes: exactly its jobs render again (new
    content is a new job), and status never calls the old ones the new ones."""
    manifest = _library(tmp_path)
    assert run_cli("run", manifest, "--fal-url", emulator.url).returncode == 0
    assert emulator.stats()["submits"] == 4
    clip = tmp_path / "lib" / "city.mp4"
    shutil.copy(MANIFESTS / "media" / "forest.mp4", clip)

    status = _status(manifest)
    assert status["total"] == {"pending": 2, "done": 2}, status
    again = run_cli("run", manifest, "--fal-url", emulator.url)
    assert again.returncode == 0, again.stderr
    assert emulator.stats()["submits"] == 6


def test_a_same_size_rewrite_in_the_same_tick_is_noticed(
    tmp_path: Path, emulator: Emulator
) -> None:
    """A clip rewritten in place to the same size with its mtime put back (a cache keyed
    on size and mtime alone would keep the old key): the new bytes make new jobs."""
    manifest = _library(tmp_path, ("city",))
    assert run_cli("run", manifest, "--fal-url", emulator.url).returncode == 0
    clip = tmp_path / "lib" / "city.mp4"
    before = clip.stat()
    data = bytearray(clip.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes (the last byte of the mdat payload)
    clip.write_bytes(bytes(data))
    os.utime(clip, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert clip.stat().st_size == before.st_size

    status = _status(manifest)
    assert status["total"] == {"pending": 2}, status


def test_a_prompt_only_manifest_plans_and_runs(tmp_path: Path, emulator: Emulator) -> None:
    """Text-to-video with only prompts, defaults and a matrix: each prompt × the matrix is a
    job, planned, priced and rendered."""
    manifest = tmp_path / "t2v.yaml"
    manifest.write_text(
        "name: t2v\n"
        "endpoint: luma/agent/ray/v3.2/text-to-video\n"
        'output: "{prompt}-{resolution}.mp4"\n'
        "output_dir: out\n"
        "defaults: {duration: 5s}\n"
        "prompts: {fox: 'a red fox in snow', rain: 'a city in the rain'}\n"
        "matrix: {resolution: [540p, 720p]}\n"
    )
    planned = run_cli("plan", manifest, "--json")
    assert planned.returncode == 0, planned.stderr
    summary = json.loads(planned.stdout)
    assert summary["total"]["jobs"] == 4 and summary["total"]["unpriced"] == 0
    ran = run_cli("run", manifest, "--fal-url", emulator.url)
    assert ran.returncode == 0, ran.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mp4")) == [
        "fox-540p.mp4",
        "fox-720p.mp4",
        "rain-540p.mp4",
        "rain-720p.mp4",
    ]


@pytest.mark.parametrize(
    "emulator_args", [("--faults", "submit#2=moderation; submit#3=drop-after")]
)
def test_every_display_prints_the_same_spend(
    tmp_path: Path, emulator_args: tuple[str, ...]
) -> None:
    """With a paid job refused by moderation and a submit whose answer was lost: the run's
    last line, status, results.jsonl and the review page print the same spend, and it is
    what the emulator was asked to render."""
    from .conftest import start_emulator, stop_emulator

    emulator = start_emulator("--job-seconds", "0.2:0.4", "--seed", "5", *emulator_args)
    try:
        manifest = _library(tmp_path, ("city", "beach", "forest"))
        ran = run_cli("run", manifest, "--fal-url", emulator.url, "--concurrency", "1")
        stats = emulator.stats()
    finally:
        stop_emulator(emulator)
    assert ran.returncode == 1, ran.stderr  # the moderated job failed
    last = ran.stderr.strip().splitlines()[-1]
    run_spend = float(re.search(r"spent \$(\d+\.\d\d)", last).group(1))  # type: ignore[union-attr]
    status = _status(manifest)
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    page = (tmp_path / "out" / "index.html").read_text()
    expected = round(0.72 * stats["submits"], 2)

    assert stats["submits"] == 7, "6 jobs, one answer lost and submitted again"
    assert run_spend == expected
    assert status["estimated_spend"] == pytest.approx(expected)
    assert sum(r["spend"] for r in records) == pytest.approx(expected)
    assert f"${expected:.2f}" in page


@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(8, id="8s"),
        pytest.param(100, id="100s", marks=[pytest.mark.slow, pytest.mark.timeout(600)]),
    ],
)
def test_an_outage_mid_run_pays_nothing_twice(tmp_path: Path, seconds: int) -> None:
    """Every fal call (queue, status, result, storage, CDN) answers 503 for a while in the
    middle of a run: every job ends done, nothing is submitted beyond the counted
    ambiguous submits, and the spend is the sum over the requests the emulator got."""
    from .conftest import start_emulator, stop_emulator

    emulator = start_emulator(
        "--job-seconds", "2:4", "--seed", "9", "--faults", f"all@+2s..+{2 + seconds}s=503"
    )
    try:
        manifest = _library(tmp_path, ("city", "beach", "forest"))
        ran = run_cli(
            "run", manifest, "--fal-url", emulator.url, "--concurrency", "3", timeout=seconds + 240
        )
        stats = emulator.stats()
    finally:
        stop_emulator(emulator)
    assert ran.returncode == 0, ran.stderr
    status = _status(manifest)
    assert status["total"] == {"done": 6}
    assert stats["submits"] == 6 + int(str(status["ambiguous_submits"]))
    assert "looks unreachable since" in ran.stderr and "answers again after" in ran.stderr
    assert status["estimated_spend"] == pytest.approx(0.72 * stats["submits"])
