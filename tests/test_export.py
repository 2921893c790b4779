"""``raybatch export``: exactly the chosen takes, byte-identical, under clean names, with a
delivery list and an OpenTimelineIO timeline; idempotent; a clash is an error."""

from __future__ import annotations

import csv
import filecmp
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import opentimelineio as otio
import pytest

from runner import session
from runner.media import probe
from runner.plan import Plan
from runner.state import StateStore

from .conftest import Emulator, one_clip_manifest, run_cli


@pytest.fixture
def rendered(tmp_path: Path, emulator: Emulator) -> Path:
    """city × 2 prompts × 2 takes, run to the end against the emulator; the manifest."""
    manifest = one_clip_manifest(tmp_path, 2)
    manifest.write_text(manifest.read_text() + "takes: 2\n")
    done = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", tmp_path / "out")
    assert done.returncode == 0, done.stderr
    return manifest


def _done(manifest: Path) -> dict[tuple[str | None, int], tuple[str, Path, str]]:
    """(prompt, take) → (key, output file, sha256) of every done job."""
    out = manifest.parent / "out"
    store = StateStore.open_readonly(out / "state.db")
    assert store is not None
    try:
        return {
            (r.prompt, r.take): (r.key, out / r.outputs[0]["path"], r.outputs[0]["sha256"])
            for r in store.rows()
        }
    finally:
        store.close()


def _plan(manifest: Path) -> Plan:
    return session.load(manifest, output_dir=manifest.parent / "out")


def test_export_delivers_exactly_the_approved_takes(rendered: Path, tmp_path: Path) -> None:
    """Two of four takes approved (one rejected, one not judged): the folder holds those
    two, hard-linked and byte-identical, listed in CSV and JSON, on a timeline where each
    takes its source's place and time range; exporting again changes nothing."""
    jobs = _done(rendered)
    approved = [jobs[("p0", 2)], jobs[("p1", 1)]]
    plan = _plan(rendered)
    session.judge(plan, [key for key, _p, _s in approved], "approved")
    session.judge(plan, [jobs[("p0", 1)][0]], "rejected", note="too dark")
    to = tmp_path / "delivery"
    ran = run_cli("export", rendered, "--output-dir", tmp_path / "out", "--to", to)
    assert ran.returncode == 0, ran.stderr
    assert "2 file(s)" in ran.stdout and "2 linked" in ran.stdout

    names = sorted(p.name for p in to.iterdir())
    assert names == [
        "city-p0-take2.mp4",
        "city-p1-take1.mp4",
        "delivery.csv",
        "delivery.json",
        "timeline.otio",
    ]
    for (key, produced, _sha), name in zip(
        approved, ("city-p0-take2.mp4", "city-p1-take1.mp4"), strict=True
    ):
        delivered = to / name
        assert filecmp.cmp(produced, delivered, shallow=False)
        assert os.path.samefile(produced, delivered), "hard-linked, not copied"
        assert key
    listed = json.loads((to / "delivery.json").read_text())
    assert [(r["file"], r["prompt"], r["take"], r["verdict"]) for r in listed] == [
        ("city-p0-take2.mp4", "p0", 2, "approved"),
        ("city-p1-take1.mp4", "p1", 1, "approved"),
    ]
    assert [r["sha256"] for r in listed] == [sha for _k, _p, sha in approved]
    assert all(r["source"].endswith("media/city.mp4") and r["cost"] > 0 for r in listed)
    with open(to / "delivery.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"] for r in rows] == [r["file"] for r in listed]
    assert rows[0]["prompt_text"] == "prompt number 0, in warm colours"

    timeline = otio.adapters.read_from_file(str(to / "timeline.otio"))
    tracks = {track.name: list(track) for track in timeline.tracks}
    assert list(tracks) == ["source", "p0", "p1"]
    city = probe(rendered.parent / "media" / "city.mp4")
    assert city.frames is not None and city.fps is not None
    for name in ("p0", "p1"):
        (clip,) = tracks[name]
        assert isinstance(clip, otio.schema.Clip)
        assert clip.source_range.start_time.value == 0
        assert clip.source_range.duration.value == city.frames
        assert clip.source_range.duration.rate == pytest.approx(city.fps)
        assert clip.media_reference.target_url == (to / clip.name).as_uri()
    (original,) = tracks["source"]
    assert original.source_range == tracks["p0"][0].source_range

    before = {p.name: p.stat().st_mtime_ns for p in to.iterdir()}
    again = run_cli("export", rendered, "--output-dir", tmp_path / "out", "--to", to)
    assert again.returncode == 0, again.stderr
    assert "2 already there" in again.stdout
    assert {p.name for p in to.iterdir()} == set(before)
    for name in ("city-p0-take2.mp4", "city-p1-take1.mp4"):
        assert (to / name).stat().st_mtime_ns == before[name]


def test_all_done_and_a_clash_that_writes_nothing(rendered: Path, tmp_path: Path) -> None:
    """--all-done delivers every finished take; a name taken by other bytes is exit 2 and
    the folder is left exactly as it was."""
    to = tmp_path / "delivery"
    to.mkdir()
    (to / "city-p1-take2.mp4").write_bytes(b"someone else's cut")
    refused = run_cli(
        "export", rendered, "--output-dir", tmp_path / "out", "--to", to, "--all-done"
    )
    assert refused.returncode == 2
    assert "city-p1-take2.mp4" in refused.stderr and "overwritten" in refused.stderr
    assert [p.name for p in to.iterdir()] == ["city-p1-take2.mp4"]
    assert (to / "city-p1-take2.mp4").read_bytes() == b"someone else's cut"

    (to / "city-p1-take2.mp4").unlink()
    ran = run_cli("export", rendered, "--output-dir", tmp_path / "out", "--to", to, "--all-done")
    assert ran.returncode == 0, ran.stderr
    assert len([p for p in to.iterdir() if p.suffix == ".mp4"]) == 4


@pytest.fixture
def other_filesystem() -> Iterator[Path]:
    """A folder on another file system than the tests' (tmpfs), where no link can go."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tempfile.gettempdir()).st_dev:
        pytest.skip("no second file system here")
    folder = Path(tempfile.mkdtemp(dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def test_a_copy_where_no_link_can_be_made(rendered: Path, other_filesystem: Path) -> None:
    """Across file systems the takes are copied, byte for byte."""
    jobs = _done(rendered)
    plan = _plan(rendered)
    session.judge(plan, [jobs[("p0", 1)][0]], "approved")
    result = session.export(plan, other_filesystem / "d")
    assert (result.linked, result.copied) == (0, 1)
    assert filecmp.cmp(
        jobs[("p0", 1)][1], other_filesystem / "d" / "city-p0-take1.mp4", shallow=False
    )
    assert not list((other_filesystem / "d").glob("*.part"))
