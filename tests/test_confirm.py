"""Before spending: on a terminal ``run`` shows the estimate and asks (above a threshold, or
whenever no max_cost caps the spend); ``--yes`` skips the question; off a terminal it never
waits. The terminal is a real pseudo-terminal (``os.openpty``) around the real CLI."""

from __future__ import annotations

import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from .conftest import ROOT, TEST_KEY, Emulator, run_cli

QUESTION = b"[y/N] "


def _on_a_terminal(
    *args: str | Path, answer: bytes | None = None, columns: int = 0, timeout: float = 60
) -> tuple[int, str]:
    """Run the CLI with stdin, stdout and stderr on a pty of ``columns`` (0: one that reports
    0×0, as a bare pty does); type ``answer`` when it asks. Returns (exit code, output)."""
    master, slave = os.openpty()
    if columns:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    env["FAL_KEY"] = TEST_KEY
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *map(str, args)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env=env,
    )
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
                if answer is not None and output.endswith(QUESTION):
                    os.write(master, answer)
            elif process.poll() is not None:
                break
        code = process.wait(timeout=10)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, output.decode(errors="replace").replace("\r\n", "\n")


def test_run_on_a_terminal_asks_without_a_max_cost(demo: Path, emulator: Emulator) -> None:
    """No max_cost: the estimate is shown and nothing starts on "n"; "y" starts it."""
    out = demo.parent / "out"
    args = ("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    code, shown = _on_a_terminal(*args, answer=b"n\n")
    assert code == 1, shown
    assert (
        "9 job(s) to submit, estimated at $6.48; no max_cost caps the spend. Start? [y/N]" in shown
    )
    assert "not started; nothing was submitted" in shown
    assert emulator.stats()["submits"] == 0 and not (out / "state.db").exists()

    code, shown = _on_a_terminal(*args, answer=b"y\n")
    assert code == 0, shown
    assert emulator.stats()["submits"] == 9


def test_the_threshold_decides_when_a_budget_is_set(demo: Path, emulator: Emulator) -> None:
    """With a max_cost, only an estimate above the threshold (--confirm-above, the manifest's
    confirm_above:, else $20) asks; --yes never asks."""
    out = demo.parent / "out"
    args = ("run", demo, "--fal-url", emulator.url, "--output-dir", out, "--max-cost", "100")
    code, shown = _on_a_terminal(*args, "--confirm-above", "5", answer=b"no\n")
    assert code == 1 and "estimated at $6.48 (above $5.00). Start? [y/N]" in shown, shown

    demo.write_text(demo.read_text() + "confirm_above: 6\n")
    code, shown = _on_a_terminal(*args, answer=b"\n")
    assert code == 1 and "(above $6.00). Start?" in shown, shown
    assert emulator.stats()["submits"] == 0

    code, shown = _on_a_terminal(*args, "--yes")
    assert code == 0 and "Start?" not in shown, shown
    assert emulator.stats()["submits"] == 9


def test_below_the_threshold_with_a_budget_it_starts(demo: Path, emulator: Emulator) -> None:
    """$6.48 under the default $20 with --max-cost: no question, the run starts at once."""
    out = demo.parent / "out"
    code, shown = _on_a_terminal(
        "run", demo, "--fal-url", emulator.url, "--output-dir", out, "--max-cost", "10"
    )
    assert code == 0 and "Start?" not in shown, shown


def test_off_a_terminal_it_never_waits(demo: Path, emulator: Emulator) -> None:
    """stdin not a terminal: the estimate is printed, nothing is asked, the run goes on."""
    done = run_cli("run", demo, "--fal-url", emulator.url, "--output-dir", demo.parent / "out")
    assert done.returncode == 0, done.stderr
    assert "estimated at $6.48; no max_cost caps the spend (not a terminal: starting" in done.stderr


def test_a_zero_by_zero_terminal_still_shows_progress(demo: Path, emulator: Emulator) -> None:
    """A terminal reporting 0 columns gets plain progress lines: the start line and the end."""
    out = demo.parent / "out"
    code, shown = _on_a_terminal("run", demo, "--fal-url", emulator.url, "--output-dir", out, "-y")
    assert code == 0, shown
    assert "run started: 9 job(s)" in shown and "finished in" in shown
    wide = demo.parent / "wide"
    code, shown = _on_a_terminal(
        "run", demo, "--fal-url", emulator.url, "--output-dir", wide, "-y", columns=100
    )
    assert code == 0 and "jobs 100%|" in shown, shown


def test_concurrency_below_one_is_a_usage_error(demo: Path) -> None:
    """--concurrency 0 or -1 is exit 2 (0 was silently replaced by the manifest's value)."""
    for value in ("0", "-1"):
        done = run_cli("run", demo, "--concurrency", value, "--output-dir", demo.parent / "out")
        assert done.returncode == 2, done.stderr
        assert "--concurrency must be at least 1" in done.stderr
        assert "raybatch: : " not in done.stderr


def test_the_estimate_counts_what_is_left(demo: Path, emulator: Emulator) -> None:
    """After a run, only the jobs still to submit are asked about: failed ones with
    --retry-failed, none otherwise (and then nothing is asked)."""
    refused = '  refused: "FORBIDDEN_CONTENT on purpose"\n'
    demo.write_text(demo.read_text().replace("\nprompts:\n", "\nprompts:\n" + refused, 1))
    out = demo.parent / "out"
    args = ("run", demo, "--fal-url", emulator.url, "--output-dir", out)
    first = run_cli(*args, "--yes")
    assert first.returncode == 1, first.stderr
    code, shown = _on_a_terminal(*args, "--retry-failed", answer=b"n\n")
    assert code == 1 and "3 job(s) to submit, estimated at $2.16;" in shown, shown
    code, shown = _on_a_terminal(*args)
    assert code == 1 and "Start?" not in shown, shown
    assert emulator.stats()["submits"] == 12
