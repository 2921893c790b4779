"""``raybatch show``: one job's whole story, by key prefix or label, in text and JSON."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runner import session

from .conftest import Emulator, run_cli
from .test_looks import gated_manifest


def test_show_tells_a_gated_render_s_story(tmp_path: Path, emulator: Emulator) -> None:
    """The render of an approved look: its input as sent (the look's URL as start frame,
    no take), its attempt with fal's request id and the logs fal sent, cost and billable
    units, its file with sha256, and its parent look (approved, gating it)."""
    manifest = gated_manifest(tmp_path, prompts=1)
    out = tmp_path / "out"
    assert run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out).returncode == 0
    plan = session.load(manifest, output_dir=out)
    look = next(spec for spec in plan.jobs if spec.role == "look")
    session.judge(plan, [look.key], "approved", note="the one")
    assert run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out).returncode == 0

    shown = run_cli("show", manifest, "city/p0", "--output-dir", out, "--json")
    assert shown.returncode == 0, shown.stderr
    story = json.loads(shown.stdout)
    assert story["endpoint"] == "luma/agent/ray/v3.2/video-to-video"
    assert story["state"] == "done" and story["take"] == 1
    (attempt,) = story["attempts"]
    requests = {r["request_id"] for r in emulator.stats()["requests"]}
    assert attempt["request_id"] in requests and attempt["billing"] == "accepted"
    messages = [entry["message"] for entry in attempt["logs"]]
    assert any(m.startswith("Running luma/agent/ray/v3.2/video-to-video") for m in messages)
    assert "Request completed" in messages
    look_story = json.loads(
        run_cli("show", manifest, look.key[:10], "--output-dir", out, "--json").stdout
    )
    assert story["input_sent"]["start_image_url"] == look_story["files"][0]["url"]
    assert "take" not in story["input_sent"]
    assert story["spend"] == story["estimated_cost"] == 0.72
    assert story["billable_units"] == 5
    (file,) = story["files"]
    data = (out / file["path"]).read_bytes()
    assert file["sha256"] == hashlib.sha256(data).hexdigest()
    (parent,) = story["parents"]
    assert parent["key"] == look.key and parent["gate"] and parent["verdict"] == "approved"
    assert look_story["children"][0]["key"] == story["key"]
    assert [(v["verdict"], v["note"]) for v in look_story["verdicts"]] == [
        ("approved", None),
        (None, "the one"),
    ]

    text = run_cli("show", manifest, "city/p0/look", "--output-dir", out)
    assert text.returncode == 0, text.stderr
    assert "verdict   approved; note: the one" in text.stdout
    assert "child " in text.stdout and "parent " in text.stdout


def test_show_names_what_it_cannot_tell_apart(tmp_path: Path) -> None:
    """A label that names no job (or several) is exit 2 with the candidates listed."""
    manifest = gated_manifest(tmp_path, prompts=2)
    missing = run_cli("show", manifest, "city/nope", "--output-dir", tmp_path / "out")
    assert missing.returncode == 2
    assert "names no job" in missing.stderr and "city/p0" in missing.stderr
