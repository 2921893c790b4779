"""Live progress: plain lines off a terminal, bars on one, -v lines, and ``run.log``."""

from __future__ import annotations

import io
import re
import stat
from pathlib import Path

import pytest

from runner.job import JobSpec
from runner.manifest import plan
from runner.pipeline import RunSummary
from runner.plan import Plan
from runner.report import Progress
from runner.report._progress import PLAIN_INTERVAL
from runner.state import OutputFile, Spend, StateStore

from . import states
from .conftest import run_cli

CANARY = "fal-canary-key-7f3e9a1c5b2d4e6f"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} ")


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def demo_plan(demo: Path, tmp_path: Path) -> Plan:
    """The demo manifest planned into a private output directory."""
    return plan(demo, output_dir=tmp_path / "out")


def _walk(progress: Progress, spec: JobSpec, *states: tuple[str, str | None]) -> None:
    for state, detail in states:
        progress.on_state(spec, state, detail)


def _finish(progress: Progress, done: int, failed: int) -> None:
    before = Spend(0.72, 5.0, 1, 0, 0)
    progress.on_finish(RunSummary(done=done, failed=failed), Spend(2.16, 15.0, 3, 0, 0), before)


def test_plain_output_prints_a_status_line_every_interval(demo_plan: Plan) -> None:
    """Off a terminal: no bars, a status line only once the interval passed, and a final one."""
    clock, out = FakeClock(), io.StringIO()
    first, second, third = demo_plan.jobs[:3]
    with Progress(demo_plan, None, stream=out, clock=clock, ticker=False) as progress:
        _walk(progress, first, ("uploading", "city.mp4"), ("submitting", None))
        _walk(progress, first, ("queued", "req-1"), ("running", None))
        _walk(progress, second, ("submitting", None), ("queued", "req-2"))
        clock.now += PLAIN_INTERVAL / 2
        progress.tick()
        before = out.getvalue()
        _walk(progress, first, ("downloading", None), ("done", None))
        progress.on_bytes("up", 3 * 1024 * 1024)
        progress.on_bytes("down", 512 * 1024)
        clock.now += PLAIN_INTERVAL / 2
        progress.tick()
        periodic = out.getvalue().removeprefix(before).strip().splitlines()
        progress.on_state(third, "failed", "ContentModerated: refused")
        _finish(progress, done=1, failed=1)
    text = out.getvalue()
    lines = text.strip().splitlines()

    assert "\r" not in text and "%|" not in text
    assert lines[0].startswith("run started: 9 job(s)")
    assert before.strip().splitlines() == lines[:1], "a line came before the interval passed"
    assert len(periodic) == 1
    line = periodic[0]
    assert "1/9 jobs: done 1 · failed 0 · in flight 0 · queued at fal 1 · waiting 7" in line
    assert "up 3.0 MiB down 512.0 KiB" in line
    assert "spent $0.00 (this run $0.00)" in line  # spend is the state's: none here
    # 1 job finished in 10 s, 8 left: 80 s at the observed throughput.
    assert line.endswith("elapsed 0:00:10 eta 0:01:20")
    assert any(ln.endswith(" city/neon failed: ContentModerated: refused") for ln in lines)
    assert "2/9 jobs" in lines[-2] and "failed 1" in lines[-2]
    assert lines[-1].startswith("finished in 0:00:10: 1 done, 1 failed")
    assert lines[-1].endswith("spent $2.16 (this run $1.44)")


def test_verbose_prints_one_line_per_transition(demo_plan: Plan) -> None:
    """With -v every state change is one line naming the job; the request id shows once."""
    out = io.StringIO()
    spec = demo_plan.jobs[0]
    states = [("submitting", None), ("queued", "req-9"), ("running", None), ("done", None)]
    with Progress(demo_plan, None, stream=out, verbose=True, ticker=False) as progress:
        _walk(progress, spec, *states)
    lines = out.getvalue().strip().splitlines()[1:]  # after the opening line

    assert [ln.split(" ", 1)[1] for ln in lines] == [
        "city/noir submitting",
        "city/noir queued (request req-9)",
        "city/noir running",
        "city/noir done",
    ]
    assert all(re.match(r"\d\d:\d\d:\d\d ", ln) for ln in lines)


def test_quiet_output_shows_failures_and_notes_only(demo_plan: Plan) -> None:
    """Without -v, ordinary transitions are not printed but failures and notes are."""
    out = io.StringIO()
    good, bad = demo_plan.jobs[:2]
    with Progress(demo_plan, None, stream=out, ticker=False) as progress:
        _walk(progress, good, ("submitting", None), ("queued", "req-1"), ("done", None))
        _walk(progress, bad, ("failed", "InputRejected: too long"))
        progress.on_note("budget reached")
    lines = out.getvalue().strip().splitlines()[1:]

    assert len(lines) == 2
    assert lines[0].endswith("city/sepia failed: InputRejected: too long")
    assert lines[1] == "budget reached"


def test_terminal_gets_job_and_byte_bars(demo_plan: Plan) -> None:
    """On a terminal the counters, spend, ETA and byte totals are drawn as tqdm bars."""
    out = Terminal()
    clock = FakeClock()
    spec = demo_plan.jobs[0]
    with Progress(demo_plan, None, stream=out, clock=clock, ticker=False) as progress:
        _walk(progress, spec, ("submitting", None), ("queued", "req-1"))
        progress.on_bytes("down", 2048)
        clock.now += 4
        _walk(progress, spec, ("running", None), ("done", None))
        progress.tick()
    text = out.getvalue()

    assert "\r" in text
    assert "jobs  11%|" in text and "1/9, done 1 · failed 0" in text
    assert "spent $0.00 (this run $0.00)" in text and "eta 0:00:32" in text
    assert "bytes up 0 B" in text and "down 2.0 KiB" in text


def test_counts_start_from_the_state_file(demo_plan: Plan) -> None:
    """A resumed run counts jobs already done or at fal, and what they cost before."""
    store = StateStore.open(demo_plan.output_dir / "state.db")
    try:
        states.add(store, demo_plan.jobs)
        a, b, c = (s.key for s in demo_plan.jobs[:3])
        output = OutputFile("city/noir.mp4", "0" * 64, 1, "http://x/y.mp4", "video")
        states.apply(
            store,
            [
                *states.done(a, [output], request_id="req-a"),
                *states.submitted(b, "req-b"),
                *states.failed(c, "InputRejected", "no"),
            ],
        )
        out = io.StringIO()
        with Progress(demo_plan, store, stream=out, ticker=False) as progress:
            progress.on_state(demo_plan.jobs[1], "running", None)
            line = progress.status_line()
    finally:
        store.close()
    log = (demo_plan.output_dir / "run.log").read_text()

    assert "1 done, 1 at fal, 6 to submit, 1 failed" in out.getvalue()
    assert "done 1 · failed 1 · in flight 1 · queued at fal 0 · waiting 6" in line
    assert "spent $1.44 (this run $0.00)" in line
    # A re-attached request keeps its id in the log.
    assert "city/sepia running request=req-b" in log


def test_secrets_are_scrubbed_from_every_line(
    demo_plan: Plan, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even a message that carries the key (a bug elsewhere) reaches neither screen nor log."""
    monkeypatch.setenv("FAL_KEY", CANARY)
    out = io.StringIO()
    with Progress(demo_plan, None, stream=out, ticker=False) as progress:
        progress.on_note(f"server said: bad key {CANARY}")
        progress.on_state(demo_plan.jobs[0], "failed", f"Key {CANARY} refused")
    log = (demo_plan.output_dir / "run.log").read_text()

    assert CANARY not in out.getvalue() and CANARY not in log
    assert "bad key ***" in out.getvalue() and "Key *** refused" in log


def test_run_log_of_a_real_run(demo: Path, tmp_path: Path) -> None:
    """A --local run writes run.log (0600) with timestamps and request ids, never the key."""
    out = tmp_path / "out"
    done = run_cli("run", demo, "--local", "--output-dir", out, key=CANARY)
    assert done.returncode == 0, done.stderr
    log_path = out / "run.log"
    log = log_path.read_text()
    lines = log.strip().splitlines()
    results = (out / "results.jsonl").read_text()
    request_ids = set(re.findall(r'"request_id":"([^"]+)"', results))

    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600
    assert all(STAMP.match(line) for line in lines)
    assert len(request_ids) == 9
    assert all(f"queued request={rid}" in log for rid in request_ids)
    assert all(f"done request={rid}" in log for rid in request_ids)
    assert lines[-1].split(" ", 1)[1].startswith("finished in ")
    # Not a terminal: plain lines, no bars, the final status line among them.
    assert "\r" not in done.stderr and "9/9 jobs: done 9" in done.stderr
    for text in (log, done.stdout, done.stderr, results):
        assert CANARY not in text
