"""The mixed example end to end, cost estimates against the price table, and the budget cap."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import av
import pytest

from .conftest import MANIFESTS, Emulator, run_cli, start_emulator, stop_emulator

#: By hand from fal's model pages (read 2026-12-04) for manifests/mixed.yaml: v2v 4 × $0.72
#: (540p 5 s) + 1 × $3.24 (720p 5 s HDR+EXR); reframe 2 × ceil(2 s) × $0.06; image-to-video
#: 2 × $0.50 (540p 5 s); uni-1 edit 2 × ($0.042 + $0.003); text-to-image 1 × $0.042.
MIXED_COSTS = {
    "luma/agent/ray/v3.2/video-to-video": 4 * 0.72 + 3.24,
    "luma/agent/ray/v3.2/reframe": 2 * 2 * 0.06,
    "luma/agent/ray/v3.2/image-to-video": 2 * 0.50,
    "luma/agent/uni-1/v1/edit": 2 * (0.042 + 0.003),
    "luma/agent/uni-1/v1/text-to-image": 0.042,
}


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A private copy of the mixed example and the demo media."""
    shutil.copytree(MANIFESTS / "media", tmp_path / "media", ignore=shutil.ignore_patterns("*.py"))
    shutil.copy(MANIFESTS / "mixed.yaml", tmp_path / "mixed.yaml")
    return tmp_path / "mixed.yaml"


def _opens(path: Path) -> None:
    """Decode a video, an image or every EXR in a zip with PyAV; fail if any is unreadable."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            assert names and all(n.endswith(".exr") for n in names)
            for name in names:
                with av.open(io.BytesIO(archive.read(name)), "r", format="image2pipe") as c:
                    frame = next(c.decode(video=0))
                    assert frame.width > 0 and frame.height > 0
        return
    with av.open(str(path), "r") as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames > 0, path


def test_mixed_example_runs_offline_and_every_output_opens(mixed: Path, tmp_path: Path) -> None:
    """Restyle, reframe, image-to-video, edit and key art all finish offline, and every
    file they produced decodes: videos, PNG/JPEG images and the EXR export."""
    out = tmp_path / "out"
    done = run_cli("run", mixed, "--local", "--output-dir", out, timeout=240)
    assert done.returncode == 0, done.stderr
    records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {r["status"] for r in records} == {"done"}
    assert {r["endpoint"] for r in records} == set(MIXED_COSTS)
    paths = [out / o["path"] for r in records for o in r["outputs"]]
    assert any(p.suffix == ".zip" for p in paths), "the HDR job exports EXR frames"
    for path in paths:
        _opens(path)
    assert all(r["billable_units"] is not None for r in records), "x-fal-billable-units kept"


def test_plan_cost_per_endpoint_matches_the_price_table(mixed: Path) -> None:
    """`plan --json` gives the per-endpoint estimate worked out by hand from the table."""
    result = run_cli("plan", mixed, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    got = {k: v["estimated_cost"] for k, v in summary["endpoints"].items()}
    assert got == pytest.approx(MIXED_COSTS)
    assert summary["total"]["estimated_cost"] == pytest.approx(sum(MIXED_COSTS.values()))
    assert any(limit["name"] == "max_source_seconds" for limit in summary["limits"])


def test_max_cost_below_the_estimate_refuses_to_start(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """--max-cost under the remaining estimate: exit 2, a message with both sums, nothing
    submitted or uploaded."""
    out = tmp_path / "out"
    result = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out, "--max-cost", "5")
    assert result.returncode == 2
    assert "$6.48" in result.stderr and "$5.00" in result.stderr
    assert result.stderr.startswith("raybatch: the remaining jobs"), "no empty location"
    assert emulator.stats()["submits"] == 0 and emulator.stats()["uploads"] == 0


def test_submission_stops_at_the_cap_and_in_flight_jobs_finish(demo: Path, tmp_path: Path) -> None:
    """Resubmissions push actual spend past the estimate: once the next submit would pass
    --max-cost nothing more is submitted, what was submitted finishes, exit 1."""
    emulator = start_emulator(
        "--synthetic",
        "--job-seconds",
        "0.2:0.4",
        "--faults",
        "submit#1-2=error:runner_disconnected",
    )
    try:
        out = tmp_path / "out"
        result = run_cli(
            "run", demo, "--fal-url", emulator.url, "--output-dir", out, "--max-cost", "7.00"
        )
        assert result.returncode == 1
        assert "budget reached" in result.stderr
        stats = emulator.stats()
        assert stats["submits"] == 9, "9 × $0.72 = $6.48; a 10th would pass $7.00"
        records = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
        assert sum(r["status"] == "done" for r in records) == 7
        status = json.loads(run_cli("status", demo, "--output-dir", out, "--json").stdout)
        assert status["total"]["done"] == 7 and status["total"]["pending"] == 2
    finally:
        stop_emulator(emulator)


@pytest.mark.parametrize(
    ("source", "phrase"),
    [
        ("long_clip.mp4", "12 s long, over the longest clip raybatch cuts (10 s"),
        ("corrupt.mp4", "could not be read"),
        ("portrait.png", "image"),
    ],
    ids=["too-long", "corrupt", "image-as-video"],
)
def test_bad_media_is_refused_by_plan_with_the_measured_value(
    demo: Path, source: str, phrase: str
) -> None:
    """Over the length cap of clips raybatch cuts (set to 10 s here; 2 h by default),
    corrupt, or an image where a clip belongs: `plan` exits 2 naming the file and what it
    measured, before anything is uploaded."""
    data = Path(__file__).parent / "data"
    origin = data / source if (data / source).exists() else MANIFESTS / "media" / source
    shutil.copy(origin, demo.parent / "media" / source)
    text = demo.read_text().replace("media/beach.mp4", f"media/{source}")
    demo.write_text(text + "segments: {max_source: 10}\n")
    result = run_cli("plan", demo)
    assert result.returncode == 2
    assert source in result.stderr and phrase in result.stderr
    assert "Traceback" not in result.stderr
