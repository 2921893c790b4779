"""What a person sees while ``run`` goes: tqdm bars on a terminal, plain lines elsewhere,
and ``run.log`` in the output directory.

The engine only calls the observer methods; this module decides how to show them.
Nothing here ever sees the API key: the engine passes job labels, states, request ids
and error messages, which the client built without it.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from typing import IO, Any, Literal

from tqdm import tqdm

from .job import JobSpec
from .manifest import Plan
from .scheduler import RunSummary
from .state import StateStore

#: How often non-terminal output prints a status line.
PLAIN_INTERVAL = 10.0


class Progress:
    """A :class:`~runner.scheduler.RunObserver` drawing bars and writing ``run.log``."""

    def __init__(
        self,
        plan: Plan,
        store: StateStore,
        *,
        verbose: bool = False,
        stream: IO[str] | None = None,
    ) -> None:
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._verbose = verbose
        self._plan = plan
        keys = {s.key for s in plan.jobs}
        states = {k: v for k, v in store.states().items() if k in keys}
        self._state: dict[str, str] = {s.key: states.get(s.key, "pending") for s in plan.jobs}
        self._counts = Counter(self._state.values())
        self._cost = {s.key: s.estimated_cost or 0.0 for s in plan.jobs}
        self._spent = 0.0
        self._bytes = {"up": 0, "down": 0}
        self._started = time.monotonic()
        self._done_at_start = self._counts["done"]
        self._last_plain = 0.0
        self._bar: Any = None
        self._bytes_bar: Any = None
        self._log: IO[str] | None = None

    def __enter__(self) -> Progress:
        path = self._plan.output_dir / "run.log"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._log = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        self._write_log(f"run started: {len(self._plan.jobs)} job(s), {self._counts['done']} done")
        if self._tty:
            self._bar = tqdm(
                total=len(self._plan.jobs),
                initial=self._counts["done"],
                desc="jobs",
                unit="job",
                file=self._stream,
                dynamic_ncols=True,
                position=0,
            )
            self._bytes_bar = tqdm(
                desc="bytes",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=self._stream,
                dynamic_ncols=True,
                position=1,
                bar_format="{desc}: {n_fmt} {rate_fmt} {postfix}",
            )
        self._refresh()
        return self

    def __exit__(self, *exc: object) -> None:
        for bar in (self._bar, self._bytes_bar):
            if bar is not None:
                bar.close()
        if self._log is not None:
            self._log.close()

    # -- observer --------------------------------------------------------------------------

    def on_state(self, spec: JobSpec, state: str, detail: str | None) -> None:
        """Count the transition, log it, and redraw."""
        previous = self._state.get(spec.key, "pending")
        shown = _bucket(state)
        if shown != _bucket(previous):
            self._counts[_bucket(previous)] -= 1
            self._counts[shown] += 1
        self._state[spec.key] = state
        if state == "queued" and previous in ("pending", "submitting", "uploading"):
            self._spent += self._cost.get(spec.key, 0.0)
        if state == "done" and self._bar is not None:
            self._bar.update(1)
        line = f"{spec.key[:12]} {spec.clip or '-'}/{spec.prompt or '-'} {state}"
        if detail:
            line += f": {detail}"
        self._write_log(line)
        if self._verbose or state == "failed":
            self._print(line)
        self._refresh()

    def on_bytes(self, direction: Literal["up", "down"], count: int) -> None:
        """Add to the byte counters."""
        self._bytes[direction] += count
        if self._bytes_bar is not None:
            self._bytes_bar.update(count)

    def on_note(self, message: str) -> None:
        """Show and log a message meant for the user."""
        self._write_log(message)
        self._print(message)

    # -- drawing ---------------------------------------------------------------------------

    def _print(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def _write_log(self, line: str) -> None:
        if self._log is not None:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            self._log.write(f"{stamp} {line}\n")

    def _eta(self) -> str:
        finished = self._counts["done"] + self._counts["failed"] - self._done_at_start
        left = sum(v for k, v in self._counts.items() if k not in ("done", "failed"))
        elapsed = time.monotonic() - self._started
        if finished <= 0 or left <= 0:
            return "?"
        seconds = elapsed / finished * left
        return time.strftime("%H:%M:%S", time.gmtime(seconds))

    def _status_text(self) -> str:
        c = self._counts
        return (
            f"done {c['done']} failed {c['failed']} running {c['running']}"
            f" queued@fal {c['queued']} waiting {c['pending']} spent ${self._spent:.2f}"
            f" eta {self._eta()}"
        )

    def _refresh(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._status_text(), refresh=False)
            self._bar.refresh()
            if self._bytes_bar is not None:
                self._bytes_bar.set_postfix_str(
                    f"up {_size(self._bytes['up'])} down {_size(self._bytes['down'])}",
                    refresh=True,
                )
            return
        now = time.monotonic()
        if now - self._last_plain >= PLAIN_INTERVAL:
            self._last_plain = now
            print(
                f"[{time.strftime('%H:%M:%S')}] {self._status_text()}",
                file=self._stream,
                flush=True,
            )

    def finish(self, summary: RunSummary) -> None:
        """Print the closing lines of a run."""
        self._last_plain = 0.0
        self._refresh()
        parts = [f"{summary.done} done", f"{summary.failed} failed"]
        if summary.not_started:
            parts.append(f"{summary.not_started} not started")
        if summary.ambiguous:
            parts.append(f"{summary.ambiguous} ambiguous submit(s)")
        if summary.resubmitted:
            parts.append(f"{summary.resubmitted} resubmitted")
        line = f"finished: {', '.join(parts)}; spent about ${summary.spent:.2f} in this run"
        if summary.interrupted:
            line += " (interrupted: run the same command again to resume)"
        self._write_log(line)
        self._print(line)


def _bucket(state: str) -> str:
    """Collapse transient states into the counters the display shows."""
    return {
        "uploading": "pending",
        "submitting": "pending",
        "downloading": "running",
        "completed": "running",
        "cancelled": "failed",
    }.get(state, state)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
