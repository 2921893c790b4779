"""``plan --clips``: per source its facts, what is rendered and billed, and each warning a
user must see before paying; the same warnings at the start of ``run``. Every clip is a
real file made at test time, read by the real media package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import runner.manifest
from runner.endpoints import IMAGE_TO_VIDEO, VIDEO_TO_VIDEO
from runner.plan import cached_plan

from .conftest import Emulator, run_cli
from .library_media import write_clip, write_still


@pytest.fixture
def footage(tmp_path: Path) -> Path:
    """A folder of the issue's cases: 7 s, 0.5 s, a phone clip turned a quarter, a clip with
    sound, a 4:3 still for image-to-video; returns its manifest."""
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clip(clips / "seven.mp4", 7, (200, 40, 40))
    write_clip(clips / "blink.mp4", 0.5, (40, 200, 40))
    write_clip(clips / "phone.mp4", 2, (40, 40, 200), rotation=90)
    write_clip(clips / "talk.mp4", 2, (200, 200, 40), audio=True)
    write_still(tmp_path / "still.png", 64, 48, (90, 90, 90))
    manifest = tmp_path / "clips.yaml"
    manifest.write_text(
        "name: clips\n"
        f"endpoint: {VIDEO_TO_VIDEO}\n"
        "defaults: {resolution: 540p, duration: 5s}\n"
        "clips: ['clips/*.mp4']\n"
        f"images: [{{path: still.png, endpoint: {IMAGE_TO_VIDEO}}}]\n"
        "prompts: {noir: 'film noir'}\n"
    )
    return manifest


def _clips(manifest: Path) -> dict[str, dict[str, Any]]:
    done = run_cli("plan", manifest, "--clips", "--json")
    assert done.returncode == 0, done.stderr
    return {clip["id"]: clip for clip in json.loads(done.stdout)["clips"]}


def test_plan_clips_shows_facts_renders_and_warnings(footage: Path) -> None:
    """Cut into renders (no longer trimmed), billed up and aspect changed, each with its
    numbers, in --json and in text."""
    clips = _clips(footage)
    seven, blink, still = clips["seven"], clips["blink"], clips["still"]
    assert (seven["kind"], seven["width"], seven["height"]) == ("video", 64, 36)
    assert seven["duration"] == pytest.approx(7.0, abs=0.05)
    assert seven["warnings"] == []  # longer than duration 5s: cut in two and stitched back
    [render] = seven["renders"]
    assert (render["jobs"], render["rendered"]) == (
        1, "all 7.0 s as 2 renders (5s+5s), anchor continuity, stitched silent"
    )  # fmt: skip
    assert render["usd"] == pytest.approx(2 * 0.72 + 0.045 + 0.048)  # renders, look, start
    assert blink["warnings"] == [
        "billed up: 0.5 s clip billed as 5s (fal sells 5 s and 10 s renders)"
    ]
    assert still["warnings"] == [
        "aspect changed: 64×48 still (1.33:1) comes back 16:9 (aspect_ratio 16:9);"
        " aspect_ratio: '4:3' keeps its shape"
    ]
    assert still["renders"][0]["rendered"] == "a 5s clip from the still"
    text = run_cli("plan", footage, "--clips").stdout
    assert "  seven  clips/seven.mp4  video, 7.0 s, 64×36" in text
    assert "      video-to-video: 1 job(s), renders all 7.0 s as 2 renders (5s+5s)" in text
    assert "      ! billed up: 0.5 s clip billed as 5s" in text


def test_an_aspect_ratio_that_fits_has_no_warning(footage: Path) -> None:
    """Set aspect_ratio: '4:3' for the still and its warning goes."""
    text = footage.read_text().replace(
        f"endpoint: {IMAGE_TO_VIDEO}}}",
        f"endpoint: {IMAGE_TO_VIDEO}, input: {{aspect_ratio: '4:3'}}}}",
    )
    footage.write_text(text)
    assert _clips(footage)["still"]["warnings"] == []


def test_rotation_and_sound_are_measured_and_warned(footage: Path) -> None:
    """A phone clip turned 90° and a clip with sound, measured by the media reader."""
    clips = _clips(footage)
    phone, talk = clips["phone"], clips["talk"]
    # Stored 36×64 and turned a quarter (counted clockwise: 270 for a 90° counterclockwise
    # display matrix), it shows upright as 64×36.
    assert phone["rotation"] == 270 and (phone["width"], phone["height"]) == (64, 36)
    assert any(
        w.startswith("rotated: stored 36×64, shown turned 270° clockwise; it is uploaded")
        for w in phone["warnings"]
    )
    assert phone["fps"] == pytest.approx(24)
    assert talk["audio"] is True
    assert (
        "sound dropped: Ray 3.2 renders silent video; the source's audio is lost"
        in talk["warnings"]
    )


def test_a_truncated_clip_is_found_by_decoding_its_end(footage: Path) -> None:
    """A faststart MP4 cut short probes fine; --clips decodes its end and says so."""
    whole = write_clip(footage.parent / "whole.mp4", 4, (10, 10, 10)).read_bytes()
    (footage.parent / "clips" / "cut.mp4").write_bytes(whole[: len(whole) * 2 // 3])
    assert any(w.startswith("truncated: ") for w in _clips(footage)["cut"]["warnings"])


def test_facts_not_measured_are_said_so(footage: Path) -> None:
    """A remote clip is not probed: its facts show as not measured, and it has no warning."""
    footage.write_text(
        footage.read_text().replace(
            "clips: ['clips/*.mp4']", "clips: ['https://media.example.invalid/remote.mp4']"
        )
    )
    remote = _clips(footage)["remote"]
    assert (remote["duration"], remote["fps"], remote["rotation"], remote["audio"]) == (
        None,
        None,
        None,
        None,
    )
    assert remote["warnings"] == [] and remote["renders"][0]["jobs"] == 1
    assert (
        "fps not measured, rotation not measured, audio not measured"
        in run_cli("plan", footage, "--clips").stdout
    )


def test_run_prints_the_warnings_before_it_starts(footage: Path, emulator: Emulator) -> None:
    """`run` says each warning before submitting, and still runs."""
    done = run_cli("run", footage, "--fal-url", emulator.url, "--output-dir", footage.parent / "o")
    assert done.returncode == 0, done.stderr
    assert "raybatch: warning: blink (clips/blink.mp4): billed up: 0.5 s clip" in done.stderr
    assert "raybatch: warning: still (still.png): aspect changed:" in done.stderr
    # seven (7 s, duration 5s) is cut in two: its look, a start frame and two renders.
    assert emulator.stats()["submits"] == 4 + 4


def test_the_facts_are_remembered_with_the_plan(
    footage: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remembered plan has the same clip facts without planning again (status never
    reads them: they sit beside the jobs, not in the record status loads)."""
    first = cached_plan(footage)
    monkeypatch.setattr(runner.manifest, "plan", _refuse)
    again = cached_plan(footage)
    assert again.clips == first.clips and len(again.clips) == 5
    assert any(w.startswith("billed up: ") for c in again.clips for w in c.warnings)


def _refuse(*args: object, **kwargs: object) -> None:
    raise AssertionError("the manifest was planned again")
