"""Endpoints raybatch does not know: declared with passthrough: true, priced or refused by
--max-cost, and their outputs saved with the extension fal's result gives them."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from runner.errors import ManifestError
from runner.manifest import plan
from runner.outputs import output_paths
from runner.report import plan_summary

from .conftest import MANIFESTS, Emulator, run_cli


def _write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        plan(path)
    return [str(problem) for problem in caught.value.problems]


def test_an_unknown_endpoint_without_passthrough_is_a_manifest_error(tmp_path: Path) -> None:
    """Every level where endpoint: is given checks it: top, clip entry, jobs: entry, each
    named by file, line and field."""
    path = _write(
        tmp_path,
        """\
        name: t
        endpoint: acme/restyle/v1
        prompts: {a: b}
        clips:
          - {path: clip.mp4, endpoint: acme/restyle/v2}
        jobs:
          - {endpoint: luma/agent/ray/v3.2/text-to-vidoe, prompt: a}
        """,
    )
    (tmp_path / "clip.mp4").write_bytes((MANIFESTS / "media" / "city.mp4").read_bytes())
    problems = _problems(path)
    assert any(
        p.startswith(f"{path}:5: clips[0].endpoint: raybatch does not know") for p in problems
    )
    assert any(
        p.startswith(f"{path}:7: jobs[0].endpoint:")
        and "did you mean 'luma/agent/ray/v3.2/text-to-video'?" in p
        for p in problems
    ), problems


def test_the_top_endpoints_passthrough_is_checked_once_the_rest_is_valid(tmp_path: Path) -> None:
    """The top-level endpoint: without passthrough: is refused on its own line."""
    path = _write(
        tmp_path, "name: t\nendpoint: acme/restyle/v1\nprompts: {a: b}\njobs: [{prompt: a}]\n"
    )
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:2: endpoint: raybatch does not know the endpoint")
    assert "set passthrough: true" in problem


def test_passthrough_without_an_endpoint_beside_it_is_refused(tmp_path: Path) -> None:
    """passthrough: true applies to the endpoint: on the same entry, so alone it is a mistake."""
    path = _write(
        tmp_path,
        """\
        name: t
        endpoint: acme/restyle/v1
        passthrough: true
        prompts: {a: b}
        jobs:
          - {prompt: a, passthrough: true}
        """,
    )
    [problem] = _problems(path)
    assert problem.startswith(f"{path}:6: jobs[0].passthrough: passthrough: true applies")


def test_passthrough_jobs_plan_unpriced_unless_given_a_price(tmp_path: Path) -> None:
    """Declared pass-through jobs plan with no price; a prices: row prices them."""
    body = """\
        name: t
        endpoint: acme/restyle/v1
        passthrough: true
        prompts: {a: one, b: two}
        jobs: [{prompts: [a, b]}]
        """
    unpriced = plan_summary(plan(_write(tmp_path, body)), None)["endpoints"]["acme/restyle/v1"]
    assert (unpriced["unpriced"], unpriced["estimated_cost"]) == (2, 0.0)
    priced_plan = plan(
        _write(tmp_path, body + "prices: {acme/restyle/v1: {usd: 0.25}}\n", "p.yaml")
    )
    priced = plan_summary(priced_plan, None)["endpoints"]["acme/restyle/v1"]
    assert (priced["unpriced"], priced["estimated_cost"]) == (0, 0.5)


def _file(url: str, **fields: Any) -> tuple[str, dict[str, Any]]:
    return ("file", {"url": url, **fields})


@pytest.mark.parametrize(
    ("output", "file", "expected"),
    [
        ("clip/noir", _file("https://cdn/x", file_name="out.webm"), "clip/noir.webm"),
        ("clip/noir", _file("https://cdn/x", content_type="video/mp4"), "clip/noir.mp4"),
        ("clip/noir", _file("https://cdn/x", content_type="image/png"), "clip/noir.png"),
        ("clip/noir", _file("https://cdn/a/result.JSON?sig=1", file_size=3), "clip/noir.json"),
        ("clip/noir", _file("https://cdn/a/result", file_size=3), "clip/noir.bin"),
        (
            "clip/noir",
            _file("https://cdn/x", file_name="../../evil.sh;rm", file_size=1),
            "clip/noir.bin",
        ),
        # A template that renders an extension keeps it, whatever fal says.
        ("clip/noir.mp4", _file("https://cdn/x", file_name="out.webm"), "clip/noir.mp4"),
    ],
)
def test_the_main_output_always_has_an_extension(
    output: str, file: tuple[str, dict[str, Any]], expected: str
) -> None:
    """An output path rendered without an extension takes the result file's: from its
    file_name, else its content_type, else its URL, else .bin; never none at all."""
    [path] = output_paths(PurePosixPath(output), [file])
    assert str(path) == expected


def test_secondary_outputs_sit_beside_an_extended_main_output() -> None:
    """The other files of a result are named after the main output's stem, as before."""
    files = [
        _file("https://cdn/v", content_type="video/mp4"),
        ("exr_file", {"url": "https://cdn/e", "file_name": "frames.exr"}),
    ]
    assert [str(p) for p in output_paths(PurePosixPath("c/noir"), files)] == [
        "c/noir.mp4",
        "c/noir.exr_file.exr",
    ]


def _passthrough_manifest(tmp_path: Path, prices: str = "") -> Path:
    return _write(
        tmp_path,
        f"""\
        name: pt
        endpoint: test/echo/v1
        passthrough: true
        output: "{{prompt}}"
        prompts: {{a: one, b: two}}
        jobs: [{{prompts: [a, b]}}]
        {prices}
        """,
    )


def test_max_cost_refuses_unpriced_passthrough_jobs(tmp_path: Path, emulator: Emulator) -> None:
    """run --max-cost with jobs that have no price exits 2 naming the endpoint that needs a
    prices: row, before anything is submitted; plan shows them as unpriced."""
    manifest = _passthrough_manifest(tmp_path)
    out = tmp_path / "out"
    shown = run_cli("plan", manifest, "--output-dir", out)
    assert shown.returncode == 0 and "0.00+?" in shown.stdout
    refused = run_cli(
        "run", manifest, "--fal-url", emulator.url, "--max-cost", "9", "--output-dir", out
    )
    assert refused.returncode == 2, refused.stderr
    assert "test/echo/v1: 2 job(s) without a price; add a prices: row for it" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert emulator.stats()["submits"] == 0
    assert not out.exists()


def test_priced_passthrough_jobs_run_and_save_files_with_extensions(
    tmp_path: Path, emulator: Emulator
) -> None:
    """With a prices: row, --max-cost can be checked: the pass-through jobs run at the
    emulator, and each output, rendered without an extension, is saved with the extension
    of fal's result file (the emulator answers unknown apps with a JSON file)."""
    manifest = _passthrough_manifest(tmp_path, "prices: {test/echo/v1: {usd: 0.01}}")
    out = tmp_path / "out"
    done = run_cli(
        "run", manifest, "--fal-url", emulator.url, "--max-cost", "1", "--output-dir", out
    )
    assert done.returncode == 0, done.stderr
    assert emulator.stats()["submits"] == 2
    for prompt, text in (("a", "one"), ("b", "two")):
        saved = json.loads((out / f"{prompt}.json").read_text())
        assert saved["endpoint"] == "test/echo/v1" and saved["arguments"]["prompt"] == text
        assert not (out / prompt).exists()
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["outputs"][0]["path"] for r in records) == ["a.json", "b.json"]
