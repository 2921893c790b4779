"""What the command line says: a help a user can act on, option defaults shown, usage
errors without a stray colon and with a "did you mean"."""

from __future__ import annotations

from pathlib import Path

from .conftest import Emulator, run_cli


def test_top_level_help_is_for_users() -> None:
    """`raybatch --help` describes the tool, where to start and the exit codes; no docstring."""
    done = run_cli("--help")
    assert done.returncode == 0, done.stderr
    assert "Run large batches of fal.ai generative-video jobs" in done.stdout
    assert "raybatch run MANIFEST --local" in done.stdout
    assert "exit codes: 0 every job done" in done.stdout
    assert "``" not in done.stdout and "runner.session" not in done.stdout


def test_option_defaults_are_shown() -> None:
    """Each option with a default says it in `run --help`."""
    shown = " ".join(run_cli("run", "--help").stdout.split())
    for phrase in (
        "in-flight jobs may still finish (default: 120.0)",
        "before giving up (default: 8)",
        "(default: the manifest's concurrency:, else 8)",
        "(default: the manifest's confirm_above:, else 20)",
        "(default: 30.0)",
    ):
        assert phrase in shown, phrase
    assert "(default: None)" not in shown and "(default: False)" not in shown


def test_usage_errors_have_no_stray_colon(demo: Path) -> None:
    """Usage and budget errors read `raybatch: usage: ...`, never `raybatch: : ...`, and name
    the command's help; a mistyped option gets a "did you mean"."""
    typo = run_cli("plan", demo, "--skip-bads")
    assert typo.returncode == 2
    assert typo.stderr == (
        "raybatch: usage: unrecognized arguments: --skip-bads; did you mean --skip-bad?"
        " (see raybatch plan --help)\n"
    )
    missing = run_cli("run")
    assert missing.returncode == 2
    assert missing.stderr.startswith("raybatch: usage: the following arguments are required")
    assert "(see raybatch run --help)" in missing.stderr
    budget = run_cli("run", demo, "--max-cost", "3", "--output-dir", demo.parent / "out")
    assert budget.returncode == 2
    assert "raybatch: the remaining jobs are estimated at $6.48, above --max-cost $3.00" in (
        budget.stderr
    )
    for done in (typo, missing, budget):
        assert "raybatch: : " not in done.stderr and "Traceback" not in done.stderr


def test_the_failure_list_names_matrix_values(demo: Path, emulator: Emulator) -> None:
    """Failed jobs that differ only by a matrix value are told apart in `status`."""
    text = demo.read_text().replace("  edit_strength: flex_2\n", "")
    text = text.replace(
        'output: "{clip}/{prompt}.mp4"', 'output: "{clip}/{prompt}-{edit_strength}.mp4"'
    )
    text = text.replace("\nprompts:\n", '\nprompts:\n  refused: "FORBIDDEN_CONTENT on purpose"\n')
    demo.write_text(text + "matrix:\n  edit_strength: [adhere_2, flex_1]\n")
    out = demo.parent / "out"
    done = run_cli("run", demo, "--only", "city", "--fal-url", emulator.url, "--output-dir", out)
    assert done.returncode == 1, done.stderr
    shown = run_cli("status", demo, "--output-dir", out).stdout
    assert "city/refused[edit_strength=adhere_2], city/refused[edit_strength=flex_1]" in shown
