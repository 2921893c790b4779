"""End to end: the real CLI against a real emulator over loopback HTTP."""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import sqlite3
import time
from pathlib import Path

import av
import numpy as np
import pytest

from .conftest import Emulator, run_cli, spawn_cli, start_emulator, stop_emulator

JOBS_IN_DEMO = 9


def _frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video as float RGB (decoded with PyAV)."""
    with av.open(str(path), "r") as container:
        frames = [
            f.to_ndarray(format="rgb24").astype(np.float32) for f in container.decode(video=0)
        ]
    assert frames, f"{path} has no frames"
    return frames


def _mean_frame(path: Path) -> np.ndarray:
    """The mean colour of a video."""
    mean: np.ndarray = np.mean([f.mean(axis=(0, 1)) for f in _frames(path)], axis=0)
    return mean


def _chroma(path: Path) -> float:
    """How colourful a video is: mean spread between a pixel's channels."""
    return float(np.mean([np.ptp(f, axis=2).mean() for f in _frames(path)]))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_runs_offline_and_writes_restyled_videos(demo: Path, tmp_path: Path) -> None:
    """`run --local` renders every demo job into a playable, restyled MP4 with state and results."""
    out = tmp_path / "out"
    done = run_cli("run", demo, "--local", "--output-dir", out, timeout=180)
    assert done.returncode == 0, done.stderr
    videos = sorted(out.rglob("*.mp4"))
    assert len(videos) == JOBS_IN_DEMO
    for video in videos:
        clip = video.parent.name
        source = _mean_frame(demo.parent / "media" / f"{clip}.mp4")
        assert np.abs(_mean_frame(video) - source).max() > 5, f"{video} looks unchanged"
    source_chroma = _chroma(demo.parent / "media" / "beach.mp4")
    assert _chroma(out / "beach" / "noir.mp4") < 0.6 * source_chroma, "noir drains colour"
    assert (out / "state.db").exists()
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == JOBS_IN_DEMO
    records = [json.loads(line) for line in lines]
    assert {r["status"] for r in records} == {"done"}
    for record in records:
        output = record["outputs"][0]
        assert _sha256(out / output["path"]) == output["sha256"]
    assert not list(out.rglob("*.part"))


def test_rerun_submits_nothing(demo: Path, tmp_path: Path, emulator: Emulator) -> None:
    """A second run of a finished manifest submits and uploads nothing and exits 0."""
    out = tmp_path / "out"
    first = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    assert first.returncode == 0, first.stderr
    before = emulator.stats()
    assert before["submits"] == JOBS_IN_DEMO
    assert before["uploads"] == 3, "each clip is uploaded once however many prompts use it"
    again = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    assert again.returncode == 0, again.stderr
    after = emulator.stats()
    assert after["submits"] == before["submits"]
    assert after["uploads"] == before["uploads"]


def test_editing_one_prompt_rerenders_only_its_jobs(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """Changing one prompt's text submits exactly that prompt's jobs (one per clip)."""
    out = tmp_path / "out"
    assert run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out).returncode == 0
    text = demo.read_text().replace("soft film grain", "heavy film grain")
    demo.write_text(text)
    again = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    assert again.returncode == 0, again.stderr
    assert emulator.stats()["submits"] == JOBS_IN_DEMO + 3


def test_sigkill_mid_run_then_resume_pays_nothing_twice(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """SIGKILL halfway, run again: every job done once, no duplicate submits, bytes match."""
    out = tmp_path / "out"
    runner = spawn_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        stats = emulator.stats()
        if stats["submits"] >= 4 and any(r["state"] == "COMPLETED" for r in stats["requests"]):
            break
        time.sleep(0.05)
    runner.send_signal(signal.SIGKILL)
    runner.communicate()
    assert runner.returncode == -signal.SIGKILL
    resumed = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    assert resumed.returncode == 0, resumed.stderr
    stats = emulator.stats()
    db = sqlite3.connect(out / "state.db")
    ambiguous = db.execute("SELECT sum(ambiguous) FROM jobs").fetchone()[0]
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert stats["distinct_inputs"] == JOBS_IN_DEMO
    # An ambiguous submit may or may not have reached fal (a kill between the intent and
    # the POST is counted too): each is at most one extra request, and every one counted.
    assert JOBS_IN_DEMO <= stats["submits"] <= JOBS_IN_DEMO + ambiguous
    served = {o["url"]: o for r in stats["requests"] for o in r["outputs"]}
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == JOBS_IN_DEMO
    for record in records:
        for output in record["outputs"]:
            remote = served[output["url"]]
            local = out / output["path"]
            assert local.stat().st_size == remote["size"]
            assert _sha256(local) == remote["sha256"]
    assert not list(out.rglob("*.part"))


@pytest.mark.parametrize(
    ("edit", "field", "phrase"),
    [
        (("concurrency: 4", "concurency: 4"), "concurency", "did you mean 'concurrency'"),
        (("edit_strength: flex_2", "edit_strength: flex_9"), "edit_strength", "flex_9"),
        (("resolution: 540p", "resolution: 540p\n  hdr: true"), "hdr", "720p"),
        (("media/beach.mp4", "media/missing.mp4"), "clips[1]", "missing.mp4"),
    ],
    ids=["typo", "bad-enum", "hdr-at-540p", "missing-clip"],
)
def test_broken_manifest_exits_2_and_submits_nothing(
    demo: Path,
    tmp_path: Path,
    emulator: Emulator,
    edit: tuple[str, str],
    field: str,
    phrase: str,
) -> None:
    """A broken manifest gets exit 2 and one message naming file, line and field."""
    demo.write_text(demo.read_text().replace(*edit))
    out = tmp_path / "out"
    result = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"{demo}:" in result.stderr or "demo.yaml:" in result.stderr
    assert field in result.stderr and phrase in result.stderr
    assert emulator.stats()["submits"] == 0
    assert not out.exists()


def test_running_from_another_directory_does_not_pay_twice(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """The default output dir is relative to where raybatch runs; from a second directory,
    where it would find no state and submit everything again, the run is refused instead."""
    first_cwd, second_cwd = tmp_path / "a", tmp_path / "b"
    first_cwd.mkdir()
    second_cwd.mkdir()
    first = run_cli("run", demo, "--fal-url", emulator.url, cwd=first_cwd)
    assert first.returncode == 0, first.stderr
    assert (first_cwd / "outputs" / "demo" / "state.db").exists()
    second = run_cli("run", demo, "--fal-url", emulator.url, cwd=second_cwd)
    assert second.returncode == 2
    assert str(first_cwd / "outputs" / "demo") in second.stderr
    assert emulator.stats()["submits"] == JOBS_IN_DEMO
    assert not (second_cwd / "outputs").exists()
    again = run_cli(
        "run",
        demo,
        "--fal-url",
        emulator.url,
        "--output-dir",
        first_cwd / "outputs" / "demo",
        cwd=second_cwd,
    )
    assert again.returncode == 0 and emulator.stats()["submits"] == JOBS_IN_DEMO


def test_downloads_falling_behind_slow_submission_down(tmp_path: Path) -> None:
    """When downloads lag, fetched results wait in a bounded queue and submission slows."""
    emulator = start_emulator(
        "--synthetic", "--job-seconds", "0.05:0.1", "--max-running", "40", "--faults",
        "cdn=slow:0.3",
    )  # fmt: skip
    manifest = tmp_path / "short.yaml"
    manifest.write_text(
        "name: short\nendpoint: test/passthrough/v1\npassthrough: true\n"
        "output: '{prompt}/{n}.bin'\n"
        "concurrency: 2\nprompts: {a: one, b: two}\n"
        "jobs:\n  - prompts: [a, b]\n    matrix: {n: " + str(list(range(18))) + "}\n"
    )
    out = tmp_path / "out"
    try:
        run = spawn_cli(
            "run", manifest, "--fal-url", emulator.url, "--output-dir", out, cwd=tmp_path
        )
        waiting: list[int] = []  # fetched results not yet downloaded, sampled while it runs
        while run.poll() is None:
            if (out / "state.db").exists():
                with (
                    contextlib.closing(
                        sqlite3.connect(f"file:{out / 'state.db'}?mode=ro", uri=True, timeout=5)
                    ) as db,
                    contextlib.suppress(sqlite3.OperationalError),
                ):  # not created yet
                    waiting.append(
                        db.execute(
                            "SELECT count(*) FROM jobs WHERE state = 'completed'"
                        ).fetchone()[0]
                    )
            time.sleep(0.05)
        _, stderr = run.communicate(timeout=60)
        stats = emulator.stats()
    finally:
        stop_emulator(emulator)

    assert run.returncode == 0, stderr
    assert stats["submit_calls"] == 36 and stats["cdn_calls"] == 36
    # "completed" = result fetched: concurrency 2 gives 4 slots, whose jobs may hold them
    # waiting for one of 4 queue places, and 4 downloads under way (their file not yet in
    # place). Unbounded, most of the 36 fast jobs would be waiting at once.
    assert max(waiting) <= 12, max(waiting)
    assert max(waiting) >= 4, "the downloads never fell behind: the test proves nothing"
