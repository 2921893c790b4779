"""``raybatch status`` against the emulator: during a run, after it, with failures, and with
``--only``/``--exclude`` selecting the work."""

from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from typing import Any

from .conftest import Emulator, run_cli, spawn_cli, start_emulator, stop_emulator

JOBS = 9
REFUSED = '  refused: "FORBIDDEN_CONTENT on purpose"\n'


def _status(manifest: Path, out: Path, *extra: str) -> dict[str, Any]:
    done = run_cli("status", manifest, "--output-dir", out, "--json", *extra)
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.glob("state.db*"))
    }


def test_status_during_and_after_a_run(demo: Path, tmp_path: Path) -> None:
    """Polled while jobs run, counts always add up and done only grows; after, all done."""
    emulator = start_emulator("--job-seconds", "2:3", "--seed", "3")
    out = tmp_path / "out"
    try:
        run = spawn_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out, cwd=tmp_path)
        seen: list[dict[str, Any]] = []
        while run.poll() is None:
            seen.append(_status(demo, out))
        _, stderr = run.communicate(timeout=60)
    finally:
        stop_emulator(emulator)
    assert run.returncode == 0, stderr
    before = _digest(out)
    after = _status(demo, out)
    text = run_cli("status", demo, "--output-dir", out)

    assert len(seen) >= 3
    for summary in seen:
        assert summary["jobs"] == JOBS
        assert sum(summary["total"].values()) == JOBS, summary["total"]
        assert summary["done"] == summary["total"].get("done", 0)
    done_counts = [s["done"] for s in seen]
    assert done_counts == sorted(done_counts), "a later status saw fewer jobs done"
    assert any(s["in_flight"] > 0 for s in seen), "no status saw a job in flight"
    assert after["total"] == {"done": JOBS} and after["in_flight"] == 0
    assert after["failures"] == [] and after["retry_command"] is None
    assert after["estimated_spend"] > 0 and after["billable_units"] > 0
    # Reading never writes: the state file (and its WAL) are byte for byte the same.
    assert _digest(out) == before
    assert text.returncode == 0
    row = next(ln for ln in text.stdout.splitlines() if ln.strip().startswith("total"))
    assert row.split()[1:] == [str(JOBS), str(JOBS)]  # done, jobs


def test_status_groups_failures_and_prints_the_retry_command(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """Jobs refused by moderation are grouped under one reason, with their clips and a retry."""
    text = demo.read_text().replace("\nprompts:\n", "\nprompts:\n" + REFUSED, 1)
    demo.write_text(text)
    out = tmp_path / "out"
    run = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    assert run.returncode == 1, run.stderr
    summary = _status(demo, out)
    shown = run_cli("status", demo, "--output-dir", out).stdout

    assert summary["total"] == {"done": JOBS, "failed": 3}
    [group] = summary["failures"]
    assert group["class"] == "ContentModerated" and group["count"] == 3
    assert {(j["clip"], j["prompt"]) for j in group["jobs"]} == {
        ("city", "refused"),
        ("beach", "refused"),
        ("forest", "refused"),
    }
    assert "3 × ContentModerated:" in shown
    assert "city/refused, beach/refused, forest/refused" in shown
    assert "change the prompt" in shown
    retry = summary["retry_command"]
    assert f"retry the failed jobs: {retry}" in shown
    words = shlex.split(retry)
    assert words[:3] == ["raybatch", "run", str(demo)]
    assert "--retry-failed" in words and words[words.index("--output-dir") + 1] == str(out)
    # The command works as printed: it submits the failed jobs again (and they fail again).
    submits = emulator.stats()["submits"]
    again = run_cli(*words[1:], "--fal-url", emulator.url, cwd=tmp_path)
    assert again.returncode == 1, again.stderr
    assert emulator.stats()["submits"] == submits + 3


def test_only_and_exclude_select_jobs_for_run_and_status(
    demo: Path, tmp_path: Path, emulator: Emulator
) -> None:
    """``run --only noir`` runs just the noir jobs; status with the same pattern shows just them."""
    out = tmp_path / "out"
    run = run_cli("run", demo, "--only", "noir", "--fal-url", emulator.url, "--output-dir", out)
    assert run.returncode == 0, run.stderr
    noir = _status(demo, out, "--only", "noir")
    everything = _status(demo, out)
    others = _status(demo, out, "--exclude", "noir")
    city = _status(demo, out, "--only", "city", "--exclude", "sepia")

    assert emulator.stats()["submits"] == 3
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == [
        "beach/noir.mp4",
        "city/noir.mp4",
        "forest/noir.mp4",
    ]
    assert noir["jobs"] == 3 and noir["total"] == {"done": 3}
    assert everything["jobs"] == JOBS and everything["total"] == {"done": 3, "pending": 6}
    assert others["jobs"] == 6 and others["total"] == {"pending": 6}
    assert city["jobs"] == 2 and city["total"] == {"done": 1, "pending": 1}


def test_status_before_anything_ran(demo: Path, tmp_path: Path) -> None:
    """Before any run, status says so, counts every job pending and creates no state file."""
    out = tmp_path / "out"
    summary = _status(demo, out)
    shown = run_cli("status", demo, "--output-dir", out).stdout

    assert summary["total"] == {"pending": JOBS} and summary["state_file"] is None
    assert "nothing has run yet" in shown
    assert not (out / "state.db").exists()
