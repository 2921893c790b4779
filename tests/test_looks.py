"""Looks first (``gate: looks``) through the real CLI against the emulator: renders do not
submit before their look is approved, do after, and nothing is paid twice."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner import session
from runner.state import StateStore

from .conftest import Emulator, one_clip_manifest, run_cli, spawn_cli

V2V = "luma/agent/ray/v3.2/video-to-video"
EDIT = "luma/agent/uni-1/v1/edit"


def gated_manifest(tmp_path: Path, prompts: int = 2, takes: int = 1) -> Path:
    """The demo's city clip × ``prompts`` prompts, looks first."""
    path = one_clip_manifest(tmp_path, prompts)
    path.write_text(path.read_text() + f"gate: looks\ntakes: {takes}\n")
    return path


def _by_endpoint(stats: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for request in stats["requests"]:
        counts[request["endpoint"]] = counts.get(request["endpoint"], 0) + 1
    return counts


def _rows(manifest: Path) -> dict[tuple[str | None, str | None, int], Any]:
    """The state's jobs by (prompt, role, take)."""
    store = StateStore.open_readonly(manifest.parent / "out" / "state.db")
    if store is None:
        return {}
    try:
        return {(r.prompt, r.role, r.take): r for r in store.rows() if r.kind == "remote"}
    finally:
        store.close()


@contextmanager
def waiting_run(manifest: Path, emulator: Emulator) -> Iterator[subprocess.Popen[str]]:
    """``run --wait-for-verdicts`` in the background (killed if the test leaves early)."""
    out = manifest.parent / "out"
    run = spawn_cli(
        "run", manifest, "--fal-url", emulator.url, "--output-dir", out, "--wait-for-verdicts",
        cwd=manifest.parent,
    )  # fmt: skip
    try:
        yield run
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()


def done_look(manifest: Path, prompt: str, take: int = 1) -> Any:
    """The state's row of that look, once it is done (waits up to a minute)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        row = _rows(manifest).get((prompt, "look", take))
        if row is not None and row.state == "done":
            return row
        time.sleep(0.2)
    raise AssertionError(f"the look of {prompt} take {take} never finished")


def _approve(manifest: Path, *keys: str, verdict: str | None = "approved") -> None:
    plan = session.load(manifest, output_dir=manifest.parent / "out")
    session.judge(plan, keys, verdict)


def test_renders_wait_for_approved_looks_and_nothing_is_paid_twice(
    tmp_path: Path, emulator: Emulator
) -> None:
    """The first run renders only the looks and ends saying what waits; approving one look
    renders exactly its video, with the look as start frame; rerunning pays nothing more."""
    manifest = gated_manifest(tmp_path)
    out = tmp_path / "out"
    first = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out)
    assert first.returncode == 0, first.stderr
    assert _by_endpoint(emulator.stats()) == {EDIT: 2}, "no video before a verdict"
    assert "2 waiting for a verdict (est. $1.44)" in first.stderr
    assert "raybatch review" in first.stderr
    assert (out / "looks" / "city" / "p0.png").is_file()

    rows = _rows(manifest)
    look0, look1 = rows[("p0", "look", 1)], rows[("p1", "look", 1)]
    assert rows[("p0", None, 1)].state == "blocked" == rows[("p1", None, 1)].state
    _approve(manifest, look0.key)

    second = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out)
    assert second.returncode == 0, second.stderr
    assert _by_endpoint(emulator.stats()) == {EDIT: 2, V2V: 1}
    assert "1 waiting for a verdict" in second.stderr
    rows = _rows(manifest)
    render = rows[("p0", None, 1)]
    assert render.state == "done" and rows[("p1", None, 1)].state == "blocked"
    store = StateStore.open_readonly(out / "state.db")
    assert store is not None
    try:
        (attempt,) = store.attempts(render.key)
    finally:
        store.close()
    sent = json.loads(attempt["sent"])
    assert sent["start_image_url"] == look0.outputs[0]["url"], "the look is the start frame"
    assert "take" not in sent

    again = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out)
    assert again.returncode == 0, again.stderr
    assert emulator.stats()["submits"] == 3, "nothing paid twice"
    _approve(manifest, look1.key, verdict="rejected")
    held = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out)
    assert held.returncode == 0, held.stderr
    assert emulator.stats()["submits"] == 3
    assert "1 held by a rejected look" in held.stderr


def test_a_waiting_run_notices_verdicts_given_meanwhile(tmp_path: Path, emulator: Emulator) -> None:
    """run --wait-for-verdicts stays after the looks; a verdict given while it waits starts
    that render within a poll, and the run ends once no look is left to judge."""
    manifest = gated_manifest(tmp_path)
    with waiting_run(manifest, emulator) as run:
        first, second = done_look(manifest, "p0"), done_look(manifest, "p1")
        time.sleep(1.0)
        assert run.poll() is None, "the run ended instead of waiting for verdicts"
        assert _by_endpoint(emulator.stats()) == {EDIT: 2}
        _approve(manifest, second.key)
        _approve(manifest, first.key, verdict="rejected")
        _stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert _by_endpoint(emulator.stats()) == {EDIT: 2, V2V: 1}
    rows = _rows(manifest)
    assert rows[("p1", None, 1)].state == "done"
    assert rows[("p0", None, 1)].state == "blocked"


def test_a_rejected_look_rolled_again_renders_a_new_take_once(
    tmp_path: Path, emulator: Emulator
) -> None:
    """reroll --only p0 after rejecting p0's look: take 2 (its look and render) is planned
    and priced, the next run renders only the new look, asking again adds nothing; status
    and plan count the verdicts and what waits."""
    manifest = gated_manifest(tmp_path)
    out = tmp_path / "out"
    assert run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out).returncode == 0
    rows = _rows(manifest)
    _approve(manifest, rows[("p0", "look", 1)].key, verdict="rejected")
    _approve(manifest, rows[("p1", "look", 1)].key, verdict="rejected")

    rolled = run_cli("reroll", manifest, "--output-dir", out, "--only", "p0")
    assert rolled.returncode == 0, rolled.stderr
    assert "city/p0 (look): rolled again as take 2" in rolled.stdout
    assert "2 new job(s), est. $0.77" in rolled.stdout
    again = run_cli("reroll", manifest, "--output-dir", out, "--only", "p0")
    assert "nothing to roll again" in again.stdout

    status = run_cli("status", manifest, "--output-dir", out, "--json")
    verdicts = json.loads(status.stdout)["verdicts"]
    assert verdicts["looks"] == {"approved": 0, "rejected": 2, "to_judge": 0}
    assert verdicts["held_by_rejection"] == {"jobs": 2, "estimated_cost": 1.44}
    assert verdicts["waiting_for_verdict"] == {"jobs": 1, "estimated_cost": 0.72}
    plan_text = run_cli("plan", manifest, "--output-dir", out).stdout
    assert "waiting for a verdict: 1 job(s), est. $0.72" in plan_text
    assert "held by a rejected look: 2 job(s)" in plan_text

    ran = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out)
    assert ran.returncode == 0, ran.stderr
    assert _by_endpoint(emulator.stats()) == {EDIT: 3}, "only the new take's look"
    assert rows.keys() <= _rows(manifest).keys()
    assert _rows(manifest)[("p0", "look", 2)].state == "done"


def test_a_waiting_run_takes_on_a_take_rolled_again_meanwhile(
    tmp_path: Path, emulator: Emulator
) -> None:
    """While run --wait-for-verdicts waits, a rejected look rolled again becomes part of
    the run: its new look renders, waits for its verdict, and once approved its video
    renders; then the run ends."""
    manifest = gated_manifest(tmp_path, prompts=1)
    with waiting_run(manifest, emulator) as run:
        _approve(manifest, done_look(manifest, "p0", 1).key, verdict="rejected")
        plan = session.load(manifest, output_dir=manifest.parent / "out")
        assert [r.take for r in session.reroll(plan).takes] == [2]
        _approve(manifest, done_look(manifest, "p0", 2).key)
        _stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert _by_endpoint(emulator.stats()) == {EDIT: 2, V2V: 1}
    rows = _rows(manifest)
    assert rows[("p0", None, 2)].state == "done" and rows[("p0", None, 1)].state == "blocked"
