"""Commands that need no media decoding start without PyAV and PySceneDetect (about 18 MB
of memory and 0.2 s on this machine): planning remote clips or prompts, ``status``, and
the review page of a library without new videos. Those that validate nothing (a plan
remembered, ``status``, the review page) load no pydantic either (17 MB). A manifest with
a local video still measures it, so it does load PyAV."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT, TEST_KEY, one_clip_manifest

HEAVY = ("av", "scenedetect", "numpy", "pydantic")

# Runs one command in a fresh interpreter, then reports its exit code and which of the heavy
# modules it imported.
_PROBE = f"""
import json, sys
from runner.cli import main
code = main(sys.argv[1:])
print(json.dumps({{"code": code, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def loaded_by(*args: str | Path, cwd: Path) -> list[str]:
    """The heavy modules ``raybatch ARGS`` imports; fails unless the command exits 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    env["FAL_KEY"] = TEST_KEY
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["code"] == 0, done.stdout + done.stderr
    loaded: list[str] = report["loaded"]
    return loaded


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def remote_library(tmp_path: Path) -> Path:
    """A video-to-video manifest over two URL clips and two looks."""
    return _write(
        tmp_path / "remote.yaml",
        [
            "name: remote",
            "endpoint: luma/agent/ray/v3.2/video-to-video",
            'output: "{clip}/{prompt}.mp4"',
            "clips:",
            '  - {id: a, url: "https://media.example.invalid/a.mp4"}',
            '  - {id: b, url: "https://media.example.invalid/b.mp4"}',
            "prompts:",
            '  warm: "warm film grain"',
            '  cold: "cold blue night"',
        ],
    )


def test_planning_remote_clips_imports_no_media_library(remote_library: Path) -> None:
    """``plan`` of URL clips loads no PyAV; planned again (remembered), not even pydantic:
    nothing is validated again."""
    first = loaded_by("plan", remote_library, cwd=remote_library.parent)
    assert first == ["pydantic"]
    assert loaded_by("plan", remote_library, cwd=remote_library.parent) == []


def test_planning_prompts_only_imports_no_media_library(tmp_path: Path) -> None:
    """A text-to-video manifest of prompts alone plans without PyAV."""
    manifest = _write(
        tmp_path / "prompts.yaml",
        [
            "name: prompts",
            "endpoint: luma/agent/ray/v3.2/text-to-video",
            'output: "{prompt}.mp4"',
            "prompts:",
            '  city: "a city at dawn"',
            '  sea: "a calm sea"',
        ],
    )
    assert loaded_by("plan", manifest, cwd=tmp_path) == ["pydantic"]


@pytest.mark.parametrize("command", ["status", "report"])
def test_reading_a_planned_library_imports_neither(remote_library: Path, command: str) -> None:
    """``status`` and ``report`` (the review page a run writes at its end) of a planned
    library load neither PyAV nor pydantic."""
    assert loaded_by("plan", remote_library, cwd=remote_library.parent) == ["pydantic"]
    assert loaded_by(command, remote_library, cwd=remote_library.parent) == []


def test_planning_a_local_video_measures_it(tmp_path: Path) -> None:
    """A local clip is still probed (durations and limits need it): PyAV is loaded."""
    manifest = one_clip_manifest(tmp_path, 2)
    assert "av" in loaded_by("plan", manifest, cwd=tmp_path)


# Makes posters of ``count`` copies of one video in a fresh interpreter, where nothing has
# imported PyAV yet; prints how many were made.
_POSTERS = """
import shutil, sys
from pathlib import Path
from runner.report._previews import make_posters
assert "av" not in sys.modules
root, source, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
videos = {}
for i in range(count):
    copy = root / f"video-{i}.mp4"
    shutil.copy(source, copy)
    videos[f"{i:02x}".ljust(64, "0")] = copy
print(len(make_posters(root, videos)))
"""


def test_first_posters_in_threads_all_made(tmp_path: Path) -> None:
    """The review page's first posters, made by worker threads in a process that has not
    loaded PyAV yet (it is loaded by the first of them), are all made. Three fresh
    processes: the first import in threads is where a race would show."""
    source = ROOT / "manifests" / "media" / "city.mp4"
    for attempt in range(3):
        root = tmp_path / f"attempt-{attempt}"
        root.mkdir()
        done = subprocess.run(
            [sys.executable, "-c", _POSTERS, str(root), str(source), "6"],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "6", done.stderr
