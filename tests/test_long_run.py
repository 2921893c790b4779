"""Long clips end to end: the real CLI against the emulator over loopback.

The example manifest (manifests/long.yaml: a 27 s clip with sound, a 95 s silent one)
runs offline with ``--local``: one stitched file per clip × prompt, the source's length
within a frame, its sound in sync, each frame showing the source moment it stands for,
seams where ``plan`` put them; running again submits nothing. Editing one prompt
re-renders only that prompt's look, start frames, renders and stitch. A failed segment
blocks its stitch with the reason, and ``--retry-failed`` redoes only what needs it.

The example clips carry their frame number in a strip of blocks along the bottom
(``manifests/media/make_media.py``); the emulator keeps the source's picture frame for
frame, so a stitched frame's strip says which source frame it shows.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import av
import pytest

from runner.media import probe
from runner.state import JobRow, JobState, StateStore
from tests.conftest import MANIFESTS, Emulator, run_cli, start_emulator, stop_emulator
from tests.crash_harness import write_manifest
from tests.media_sources import click_times

#: Frames over which the emulator dissolves a render's start image into the edit.
START_FADE_FRAMES = 6
RENDER_FPS = 24


def _make_media() -> ModuleType:
    """The example media's generator, for its frame-number strip reader."""
    spec = importlib.util.spec_from_file_location(
        "make_media", MANIFESTS / "media" / "make_media.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def strip_numbers(path: Path) -> list[int]:
    """The source frame number each frame of ``path`` shows in its strip (read from a
    small copy of each picture: the blocks survive scaling, and it is quicker)."""
    read = _make_media().read_strip
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        return [
            read(frame.reformat(width=192, height=108, format="rgb24").to_ndarray())
            for frame in container.decode(stream)
        ]


def rows(out: Path) -> list[JobRow]:
    """Every job of the state file, read as ``status`` reads it."""
    store = StateStore.open_readonly(out / "state.db")
    assert store is not None
    try:
        return store.rows()
    finally:
        store.close()


def example(
    tmp_path: Path, clips: str | None = None, prompts: dict[str, str] | None = None
) -> Path:
    """A copy of manifests/long.yaml and its clips; ``clips``/``prompts`` replace its own."""
    media = tmp_path / "media" / "long"
    media.mkdir(parents=True)
    for clip in (MANIFESTS / "media" / "long").glob("*.mp4"):
        shutil.copy(clip, media / clip.name)
    text = (MANIFESTS / "long.yaml").read_text()
    if clips is not None:
        text = text[: text.index("clips:")] + f"clips: {clips}\n"
    if prompts is not None:
        text = text.split("prompts:")[0] if "prompts:" in text else text
        text += "prompts:\n" + "".join(f'  {k}: "{v}"\n' for k, v in prompts.items())
    path = tmp_path / "long.yaml"
    path.write_text(text)
    return path


def check_stitched(path: Path, source: Path, seams: list[float]) -> None:
    """``path`` lasts as long as ``source`` within a frame, each frame shows the source
    frame of its moment except a render's first frames (its start image dissolving in),
    which come right after each seam and only there; the sound is the source's, in sync."""
    got, want = probe(path), probe(source)
    assert got.duration == pytest.approx(want.duration, abs=1 / RENDER_FPS)
    fps = want.fps or 24.0
    numbers = strip_numbers(path)
    expected = [int(j * fps / RENDER_FPS + 1e-6) for j in range(len(numbers))]
    off = {j for j, (n, e) in enumerate(zip(numbers, expected, strict=True)) if n != e}
    starts = [round(seam * RENDER_FPS) for seam in [0.0, *seams]]
    windows = [set(range(start, start + START_FADE_FRAMES)) for start in starts]
    assert off <= set().union(*windows), sorted(off - set().union(*windows))[:10]
    for seam, window in zip([0.0, *seams], windows, strict=True):
        assert off & window, f"no render starts at {seam} s"
    assert got.has_audio == want.has_audio
    if want.has_audio:
        heard, played = click_times(path), click_times(source)
        assert heard == pytest.approx(played, abs=1 / RENDER_FPS)


@pytest.mark.timeout(300)
def test_the_example_runs_offline_and_again_submits_nothing(tmp_path: Path) -> None:
    """run --local on manifests/long.yaml: a stitched file per clip × prompt with the
    source's length, sound and pictures, seams at the planned times; a second run submits
    nothing and leaves every file as it was."""
    manifest = example(tmp_path)
    out = tmp_path / "out"
    planned = run_cli("plan", manifest, "--json", "--output-dir", out, cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    seams = {clip["clip"]: clip["seams"] for clip in json.loads(planned.stdout)["segmented"]}
    done = run_cli("run", manifest, "--local", "--output-dir", out, cwd=tmp_path, timeout=280)
    assert done.returncode == 0, done.stderr
    for clip in ("harbour", "valley"):
        for prompt in ("noir", "sepia"):
            source = tmp_path / "media" / "long" / f"{clip}.mp4"
            check_stitched(out / clip / f"{prompt}.mp4", source, seams[clip])
    before = rows(out)
    assert {row.state for row in before} == {JobState.DONE}
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.mp4") if ".emulator" not in p.parts}
    again = run_cli("run", manifest, "--local", "--output-dir", out, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    after = rows(out)
    assert [(r.key, r.attempts, r.request_id) for r in after] == [
        (r.key, r.attempts, r.request_id) for r in before
    ]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


@pytest.fixture
def strict() -> Iterator[Emulator]:
    """An emulator that refuses a video-to-video source of any other length than the
    duration asked for (what fal does then is not documented: raybatch never relies on it)."""
    emu = start_emulator(
        "--job-seconds", "0.3:0.8", "--seed", "1", "--v2v-long", "reject", "--v2v-short", "reject"
    )  # fmt: skip
    try:
        yield emu
    finally:
        stop_emulator(emu)


@pytest.mark.timeout(300)
def test_editing_one_prompt_rerenders_only_that_prompts_jobs(
    tmp_path: Path, strict: Emulator
) -> None:
    """harbour × 2 prompts, then p1's text edited: exactly p1's look, two start frames and
    three renders are submitted again and its stitch redone; the cuts and frames, and
    every job of p0, stay as they were. Every segment is sent exactly as long as it asks
    to be rendered (the emulator refuses any other)."""
    emulator = strict
    prompts = {"p0": "film noir", "p1": "sepia photograph"}
    manifest = example(tmp_path, clips="[media/long/harbour.mp4]", prompts=prompts)
    out = tmp_path / "out"
    first = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    submitted = len(emulator.stats()["requests"])
    assert submitted == 2 * (1 + 2 + 3)
    before = {row.key: row for row in rows(out)}
    manifest.write_text(manifest.read_text().replace("sepia photograph", "warm sepia print"))
    second = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    requests = emulator.stats()["requests"][submitted:]
    assert sorted(r["endpoint"] for r in requests) == sorted(
        ["luma/agent/uni-1/v1/edit"] * 3 + ["luma/agent/ray/v3.2/video-to-video"] * 3
    )
    after = {row.key: row for row in rows(out)}
    new = [row for key, row in after.items() if key not in before]
    assert sorted(row.endpoint for row in new) == sorted(
        ["luma/agent/uni-1/v1/edit"] * 3 + ["luma/agent/ray/v3.2/video-to-video"] * 3
        + ["local/stitch"]
    )  # fmt: skip
    assert {row.prompt for row in new} == {"p1"}
    for key, row in before.items():
        if row.prompt != "p1":  # p0's jobs and the clip's cuts and frames
            assert after[key].finished_at == row.finished_at, row.output
            assert after[key].state is JobState.DONE


@pytest.mark.timeout(300)
def test_a_run_from_a_remembered_plan_makes_its_local_steps(
    tmp_path: Path, emulator: Emulator
) -> None:
    """A run whose plan comes from the cache (so nothing has imported PyAV before its
    first cuts and frames, which start together in worker threads) makes every one of
    them: none fails half imported (that took every cut and frame of a resumed run; a
    thread race, so without the fix this test fails about every other time)."""
    manifest = write_manifest(tmp_path, 1, long=True)  # two clips: cuts and frames at once
    out = tmp_path / "out"
    assert run_cli("plan", manifest, "--output-dir", out, cwd=tmp_path).returncode == 0
    done = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    steps = [row for row in rows(out) if row.endpoint.startswith("local/")]
    assert len(steps) >= 4 and all(row.state is JobState.DONE for row in steps)


@pytest.mark.timeout(300)
def test_a_failed_segment_blocks_its_stitch_and_retry_redoes_only_it(
    tmp_path: Path, emulator: Emulator
) -> None:
    """The last submission fails (fal refuses it): that render fails, the stitch fails
    "blocked by" it with the render's name, the rest is done; --retry-failed submits that
    render alone and then stitches."""
    manifest = example(tmp_path, clips="[media/long/harbour.mp4]", prompts={"p0": "film noir"})
    out = tmp_path / "out"
    remote = 1 + 2 + 3  # look, two start frames, three renders
    emulator.post("/_emulator/faults", {"spec": f"submit#{remote}=validation"})
    failed = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out, cwd=tmp_path)
    assert failed.returncode == 1, failed.stderr
    states = {row.key: row for row in rows(out)}
    broken = [row for row in states.values() if row.state is JobState.FAILED]
    assert sorted(row.endpoint for row in broken) == sorted(
        ["luma/agent/ray/v3.2/video-to-video", "local/stitch"]
    )
    render = next(row for row in broken if row.endpoint.endswith("video-to-video"))
    stitch = next(row for row in broken if row.endpoint == "local/stitch")
    segment = render.labels["segment"]
    assert (stitch.error or "").startswith(f"blocked by harbour/p0[segment={segment}]")
    status = run_cli("status", manifest, "--output-dir", out, cwd=tmp_path)
    assert f"blocked by harbour/p0[segment={segment}]" in status.stdout
    assert not (out / "harbour" / "p0.mp4").exists()
    emulator.post("/_emulator/faults", {"spec": ""})
    submitted = len(emulator.stats()["requests"])
    retried = run_cli(
        "run", manifest, "--fal-url", emulator.url, "--output-dir", out, "--retry-failed",
        cwd=tmp_path,
    )  # fmt: skip
    assert retried.returncode == 0, retried.stderr
    again = emulator.stats()["requests"][submitted:]
    assert [r["endpoint"] for r in again] == ["luma/agent/ray/v3.2/video-to-video"]
    after = {row.key: row for row in rows(out)}
    assert {row.state for row in after.values()} == {JobState.DONE}
    for key, row in states.items():
        if row.state is JobState.DONE:
            assert after[key].finished_at == row.finished_at
    assert probe(out / "harbour" / "p0.mp4").duration == pytest.approx(27.0, abs=1 / 24)


def test_outputs_other_jobs_read_are_checked_before_a_run_starts(tmp_path: Path) -> None:
    """Every job whose output another job reads (a cut, a frame, a look, a render before
    its stitch) is in the set a run checks before it starts anything; the stitches, which
    nothing reads, are left to the check beside the first submissions."""
    from runner._upkeep import read_by_others
    from runner.manifest import plan

    planned = plan(example(tmp_path), output_dir=tmp_path / "out")
    c = planned.columns
    first = read_by_others(planned)
    for key, parents, gates in zip(c.keys, c.parents, c.gates or [()] * len(c), strict=True):
        assert set(parents) | set(gates) <= first, key
    assert len(first) > 2 * len(c.keys) // 3  # cuts, frames, looks, start frames, renders
    stitches = {k for k, e in zip(c.keys, c.endpoints, strict=True) if e == "local/stitch"}
    assert stitches and not stitches & first
