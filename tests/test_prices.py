"""``raybatch endpoints`` and ``--prices FILE``: the cited tables as a user sees them, and the
user's own rows over them (validated like a manifest, winning over the manifest's)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from runner import cli
from runner.endpoints import ENDPOINTS, IMAGE_TO_VIDEO, REFRAME, VIDEO_TO_VIDEO

from .conftest import MANIFESTS, Emulator, run_cli

I2V_PAGE = "fal.ai/models/luma/agent/ray/v3.2/image-to-video/llms.txt"


def _main(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = cli.main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_endpoints_lists_every_known_endpoint_with_cited_rows() -> None:
    """The real CLI: every known endpoint, its fields, rules, limits and prices, each row
    with its source and date; the image-to-video price is fal's page's."""
    shown = run_cli("endpoints", "--json")
    assert shown.returncode == 0, shown.stderr
    endpoints = json.loads(shown.stdout)["endpoints"]
    assert set(endpoints) == set(ENDPOINTS)
    for endpoint, rows in endpoints.items():
        assert {row["kind"] for row in rows} >= {"field", "limit", "price"}, endpoint
        for row in rows:
            assert row["source"].strip() and row["date"].strip(), (endpoint, row)
            assert row["user"] is False
    cheapest = endpoints[IMAGE_TO_VIDEO][
        [r["value"] for r in endpoints[IMAGE_TO_VIDEO]].index(
            "$0.5 for resolution=540p duration=5s hdr=false exr_export=false"
        )
    ]
    assert (cheapest["source"], cheapest["date"]) == (I2V_PAGE, "2026-12-04")
    text = run_cli("endpoints")
    assert text.returncode == 0
    assert "luma/agent/ray/v3.2/reframe" in text.stdout and "sources:" in text.stdout
    assert f"] {I2V_PAGE}" in text.stdout


PRICES_FILE = """\
    # Our negotiated rates.
    luma/agent/ray/v3.2/video-to-video:
      - {usd: 0.5, when: {resolution: 540p}}
      - usd: 0.9
    acme/upscale/v2: {usd: 0.02, per: source_second}
    """


def test_endpoints_marks_the_rows_of_a_prices_file_and_a_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--prices and --manifest rows replace the table's for their endpoints and are marked
    as the user's, cited to their file; the file's win over the manifest's."""
    prices = _write(tmp_path / "rates.yaml", PRICES_FILE)
    manifest = _write(
        tmp_path / "m.yaml",
        f"""\
        name: m
        endpoint: {VIDEO_TO_VIDEO}
        prices:
          {VIDEO_TO_VIDEO}: {{usd: 7}}
          {REFRAME}: {{usd: 0.05, per: source_second}}
        limits:
          {REFRAME}: {{max_source_seconds: 12}}
        """,
    )
    code, out, _ = _main(capsys, "endpoints", "--json", "--prices", prices, "--manifest", manifest)
    assert code == 0
    endpoints = json.loads(out)["endpoints"]
    v2v = [r for r in endpoints[VIDEO_TO_VIDEO] if r["kind"] == "price"]
    assert [(r["value"], r["user"], r["source"]) for r in v2v] == [
        ("$0.5 for resolution=540p", True, f"prices file {prices}"),
        ("$0.9", True, f"prices file {prices}"),
    ]
    reframe = {r["name"]: r for r in endpoints[REFRAME] if r["kind"] in ("price", "limit")}
    assert reframe["per source second"]["source"] == f"manifest {manifest}"
    assert reframe["max_source_seconds"]["value"] == "12" and reframe["max_source_seconds"]["user"]
    assert endpoints["acme/upscale/v2"] == [
        {
            "kind": "price",
            "name": "per source second",
            "value": "$0.02",
            "source": f"prices file {prices}",
            "date": endpoints["acme/upscale/v2"][0]["date"],
            "note": "",
            "user": True,
        }
    ]
    code, text, _ = _main(capsys, "endpoints", "--prices", prices)
    assert code == 0 and "*price  per job" in text and "acme/upscale/v2  (pass-through" in text


@pytest.mark.parametrize(
    ("body", "line", "field", "phrase"),
    [
        # One row for an endpoint is a list of one: its fields are reported as [0].
        (f"{VIDEO_TO_VIDEO}:\n  usd: -1\n", 1, f"{VIDEO_TO_VIDEO}[0].usd", "greater than or equal"),
        (
            f"{VIDEO_TO_VIDEO}:\n  - usdd: 1\n",
            2,
            f"{VIDEO_TO_VIDEO}[0].usdd",
            "did you mean 'usd'?",
        ),
        (f"{VIDEO_TO_VIDEO}: {{usd: 1, per: frame}}\n", 1, f"{VIDEO_TO_VIDEO}[0].per", "'frame'"),
        ("not an id: {usd: 1}\n", 1, "not an id", "is not a fal endpoint id"),
        (
            "prices: {}\nlimits:\n  acme/x: {max_seconds: 3}\n",
            3,
            "limits.acme/x.max_seconds",
            "did you mean",
        ),
        ("- just a list\n", 1, "", "must be a mapping"),
        ("", None, "", "the prices file is empty"),
    ],
)
def test_a_bad_prices_file_names_its_file_line_and_field(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    body: str,
    line: int | None,
    field: str,
    phrase: str,
) -> None:
    """A --prices file is checked like a manifest: exit 2, FILE:LINE: FIELD: message, no
    traceback, nothing planned."""
    prices = tmp_path / "rates.yaml"
    prices.write_text(body)
    manifest = MANIFESTS / "demo.yaml"
    code, out, err = _main(capsys, "plan", manifest, "--prices", prices)
    assert code == 2 and not out
    where = f"{prices}:{line}: " if line else f"{prices}: "
    assert err.startswith("raybatch: ") and "Traceback" not in err
    assert any(
        part.startswith(f"{where}{field + ': ' if field else ''}") and phrase in part
        for part in err.removeprefix("raybatch: ").splitlines()
    ), err


def _plan_json(capsys: pytest.CaptureFixture[str], *args: str | Path) -> dict[str, Any]:
    code, out, err = _main(capsys, "plan", "--json", *args)
    assert code == 0, err
    data: dict[str, Any] = json.loads(out)
    return data


def test_plan_with_prices_prices_jobs_and_wins_over_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """plan --prices: the file's rows price the jobs, over the manifest's prices: for the same
    endpoint; without --prices the same manifest is priced by its own rows again (the
    remembered plan is keyed by the file's rows)."""
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "city.mp4").write_bytes((MANIFESTS / "media" / "city.mp4").read_bytes())
    manifest = _write(
        tmp_path / "m.yaml",
        f"""\
        name: m
        endpoint: {VIDEO_TO_VIDEO}
        clips: [media/city.mp4]
        prompts: {{a: one, b: two}}
        prices:
          {VIDEO_TO_VIDEO}: {{usd: 3}}
        """,
    )
    prices = _write(tmp_path / "rates.yaml", PRICES_FILE)
    out = tmp_path / "out"
    own = _plan_json(capsys, manifest, "--output-dir", out)
    assert own["total"]["estimated_cost"] == 6.0
    overridden = _plan_json(capsys, manifest, "--output-dir", out, "--prices", prices)
    assert overridden["total"]["estimated_cost"] == 1.0  # 2 x $0.50 at 540p
    assert [job["estimated_cost"] for job in overridden["jobs"]] == [0.5, 0.5]
    again = _plan_json(capsys, manifest, "--output-dir", out)
    assert again["total"]["estimated_cost"] == 6.0
    # A file of limits only changes no price, and its limits apply.
    strict = _write(
        tmp_path / "strict.yaml", f"limits:\n  {VIDEO_TO_VIDEO}: {{max_source_seconds: 0.5}}\n"
    )
    code, _, err = _main(capsys, "plan", manifest, "--output-dir", out, "--prices", strict)
    assert code == 2 and "accepts at most 0.5 s (prices file" in err
    lenient = _write(
        tmp_path / "lenient.yaml", f"limits:\n  {VIDEO_TO_VIDEO}: {{max_source_seconds: 20}}\n"
    )
    code, text, _ = _main(capsys, "plan", manifest, "--output-dir", out, "--prices", lenient)
    assert code == 0
    assert f"{VIDEO_TO_VIDEO}  max_source_seconds=20 (yours)  [prices file {lenient}, " in text


def test_run_and_status_with_a_prices_file(tmp_path: Path, emulator: Emulator) -> None:
    """A --prices row prices pass-through jobs, so run --max-cost can check and start them;
    status given the same file reports the spend at those prices."""
    manifest = _write(
        tmp_path / "pt.yaml",
        """\
        name: pt
        endpoint: test/echo/v1
        passthrough: true
        prompts: {a: one, b: two, c: three}
        jobs: [{prompts: [a, b, c]}]
        """,
    )
    prices = _write(tmp_path / "rates.json", '{"test/echo/v1": {"usd": 0.25}}')
    out = tmp_path / "out"
    over = run_cli(
        "run", manifest, "--fal-url", emulator.url, "--output-dir", out,
        "--prices", prices, "--max-cost", "0.5",
    )  # fmt: skip
    assert over.returncode == 2 and "estimated at $0.75, above --max-cost $0.50" in over.stderr
    assert emulator.stats()["submits"] == 0
    done = run_cli(
        "run", manifest, "--fal-url", emulator.url, "--output-dir", out,
        "--prices", prices, "--max-cost", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status = run_cli("status", manifest, "--json", "--output-dir", out, "--prices", prices)
    assert status.returncode == 0, status.stderr
    summary = json.loads(status.stdout)
    assert summary["done"] == 3 and summary["estimated_spend"] == 0.75
