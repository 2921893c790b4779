"""What a person sees while ``run`` goes: tqdm bars on a terminal, plain lines elsewhere,
and ``run.log`` in the output directory.

The engine only calls the observer methods; this module decides how to show them.

* On a terminal: a bar of finished jobs (done, failed, in flight at fal, queued at fal,
  waiting here, spend, ETA) and a line of bytes up and down with their rates.
* Anywhere else (a CI log, ``nohup``, a pipe): one plain status line every
  :data:`PLAIN_INTERVAL` seconds and a final one, never carriage returns.
* With ``-v``: one concise line per job transition. Failures and notes always show.
* ``run.log`` (mode 0600): every transition with a timestamp, the job and its request id.

Nothing here is given the API key: the engine passes job labels, states, request ids and
error messages, which the client built without it. As a second line of defence every line
is scrubbed of the key's value anyway, so a mistake elsewhere cannot leak it into a log.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import IO, Any, Literal

from tqdm import tqdm

from ..job import JobSpec
from ..pipeline import RunSummary
from ..plan import Plan
from ..state import JobState, PlanSnapshot, Spend, StateStore
from ._summary import human_size

#: How often non-terminal output prints a status line, in seconds.
PLAIN_INTERVAL = 10.0
#: How often the ticker wakes: bars redraw (elapsed time and ETA move on without events).
TICK = 1.0
#: Environment variables holding credentials that must never reach a log line.
SECRET_VARIABLES = ("FAL_KEY", "FAL_KEY_ID", "FAL_KEY_SECRET")

#: Display counter of each job state. ``in flight`` is rendering at fal or downloading;
#: ``queued`` is waiting in fal's queue; ``waiting`` has not been submitted (or is being
#: so), including jobs blocked on other jobs and local steps at work.
BUCKETS: dict[str, str] = {
    "new": "waiting",
    JobState.BLOCKED: "waiting",
    JobState.PENDING: "waiting",
    JobState.UPLOADING: "waiting",
    JobState.PREPARING: "waiting",
    JobState.SUBMITTING: "waiting",
    JobState.QUEUED: "queued",
    JobState.RUNNING: "in flight",
    JobState.COMPLETED: "in flight",
    JobState.DOWNLOADING: "in flight",
    JobState.DONE: "done",
    JobState.FAILED: "failed",
    JobState.CANCELLED: "failed",
}


def bucket(state: str) -> str:
    """The display counter a job in ``state`` belongs to."""
    return BUCKETS.get(state, "waiting")


class Progress:
    """A :class:`~runner.scheduler.RunObserver` drawing bars and writing ``run.log``.

    Thread-safe: the engine calls it from the event loop, a ticker thread redraws it.
    ``clock`` and ``ticker`` exist for tests, which drive time by hand and call
    :meth:`tick` themselves.
    """

    def __init__(
        self,
        plan: Plan,
        store: StateStore | None,
        *,
        verbose: bool = False,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        ticker: bool = True,
    ) -> None:
        self._stream = stream or sys.stderr
        self._tty = _isatty(self._stream)
        self._verbose = verbose
        self._plan = plan
        self._clock = clock
        self._ticker = ticker
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Only unfinished jobs change state in a run: a resumed 100k-job run reads (and
        # builds) nothing per finished job.
        if store is None:
            snapshot = PlanSnapshot(Counter({"new": len(plan)}), {})
        else:
            snapshot = store.snapshot(plan.keys, plan.identity)
        self._store = store
        self._state: dict[str, str] = plan.jobs.own_keys(snapshot.unfinished)
        self._request = store.requests_in_flight() if store is not None else {}
        self._counts = Counter[str]()
        for state, count in snapshot.counts.items():
            self._counts[bucket(state)] += count
        # Jobs that wait for a person's verdict are not work the run will do by itself: the
        # ETA leaves them out until they are let go.
        gates = plan.columns.gates if any(plan.columns.gates) else []
        self._gated = {key for key, g in zip(plan.keys, gates, strict=False) if g}
        known = store.states() if self._gated and store is not None else {}
        self._held = {k for k in self._gated if known.get(k, "new") in ("blocked", "new")}
        self._spend_before = store.spend() if store is not None else _NO_SPEND
        self._spend = self._spend_before
        self._spend_read = clock()
        self._bytes = {"up": 0, "down": 0}
        self._started = clock()
        self._finished_at_start = self._counts["done"] + self._counts["failed"]
        self._last_plain = self._started
        self._secrets = [v for v in map(os.environ.get, SECRET_VARIABLES) if v and len(v) >= 6]
        self._jobs_bar: Any = None
        self._bytes_bar: Any = None
        self._log: IO[str] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Progress:
        self._plan.output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(
            self._plan.output_dir / "run.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
        )
        # O_CREAT's mode only applies to a new file; an old log may have been made wider.
        os.fchmod(fd, 0o600)
        self._log = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        c = self._counts
        opening = (
            f"run started: {len(self._plan.jobs)} job(s) from {self._plan.manifest_path}:"
            f" {c['done']} done, {c['queued'] + c['in flight']} at fal,"
            f" {c['waiting']} to submit, {c['failed']} failed"
        )
        self._write_log(opening)
        if self._tty:
            shared = {"file": self._stream, "dynamic_ncols": True, "leave": True}
            self._jobs_bar = tqdm(
                total=len(self._plan.jobs),
                initial=self._finished(),
                desc="jobs",
                position=0,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt}{postfix}",
                **shared,
            )
            # A bar used as a status line: its text is all in the description.
            self._bytes_bar = tqdm(desc="bytes", position=1, bar_format="{desc}", **shared)
            self._draw()
        else:
            self._print(opening)
        if self._ticker:
            self._thread = threading.Thread(target=self._tick_loop, name="progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            for bar in (self._jobs_bar, self._bytes_bar):
                if bar is not None:
                    bar.close()
            self._jobs_bar = self._bytes_bar = None
            if self._log is not None:
                with contextlib.suppress(OSError):  # a last flush on a full disk
                    self._log.close()
                self._log = None

    def _tick_loop(self) -> None:
        # Every second either way: bars redraw, plain output checks whether a line is due.
        while not self._stop.wait(TICK):
            self.tick()

    def tick(self) -> None:
        """Redraw the bars, or print the periodic plain line when one is due."""
        with self._lock:
            if self._tty:
                self._draw()
                return
            now = self._clock()
            if now - self._last_plain >= PLAIN_INTERVAL:
                self._last_plain = now
                self._print(self.status_line())

    # -- observer --------------------------------------------------------------------------

    def on_state(self, spec: JobSpec, state: str, detail: str | None) -> None:
        """Count the transition, log it, and show it (always for failures, else with -v)."""
        with self._lock:
            previous = self._state.get(spec.key, "new")
            self._counts[bucket(previous)] -= 1
            self._counts[bucket(state)] += 1
            self._state[spec.key] = state
            if spec.key in self._gated:
                self._held.discard(spec.key)
            request = None
            if state == JobState.QUEUED and bucket(previous) == "waiting":
                # A new request at fal: ``detail`` is its id.
                if detail:
                    self._request[spec.key] = detail
                request, detail = detail, None
            elif state == JobState.PENDING:
                self._request.pop(spec.key, None)
            else:
                request = self._request.get(spec.key)
            label = spec.label
            line = f"{label} {state}" + (f": {detail}" if detail else "")
            self._write_log(
                f"job={spec.key[:12]} {line}" + (f" request={request}" if request else "")
            )
            if self._verbose or state in (JobState.FAILED, JobState.CANCELLED):
                queued = state == JobState.QUEUED
                shown = line + (f" (request {request})" if request and queued else "")
                self._print(f"{time.strftime('%H:%M:%S')} {shown}")
            if self._tty:
                self._draw()

    def on_reopened(self, spec: JobSpec, state: str, detail: str | None) -> None:
        """A done job is counted again where it went back to (its output was damaged)."""
        with self._lock:
            self._state[spec.key] = JobState.DONE
            self.on_state(spec, state, detail)

    def on_bytes(self, direction: Literal["up", "down"], count: int) -> None:
        """Add to the byte counters (drawn with the next redraw)."""
        with self._lock:
            self._bytes[direction] += count

    def on_note(self, message: str) -> None:
        """Show and log a message meant for the user."""
        with self._lock:
            self._write_log(message)
            self._print(message)

    def on_finish(self, summary: RunSummary, spend: Spend, spend_before: Spend) -> None:
        """Print the last status line and the closing line of a run."""
        with self._lock:
            self._spend = spend
            if self._tty:
                self._draw()
            else:
                self._print(self.status_line())
            parts = [f"{summary.done} done", f"{summary.failed} failed"]
            if summary.cancelled:
                parts.append(f"{summary.cancelled} cancelled")
            if summary.not_started:
                parts.append(f"{summary.not_started} not started")
            if summary.ambiguous:
                parts.append(f"{summary.ambiguous} ambiguous submit(s)")
            if summary.resubmitted:
                parts.append(f"{summary.resubmitted} resubmitted")
            if summary.awaiting_verdict:
                parts.append(
                    f"{summary.awaiting_verdict} waiting for a verdict"
                    f" (est. ${summary.awaiting_cost:.2f})"
                )
            if summary.held_by_rejection:
                parts.append(
                    f"{summary.held_by_rejection} held by a rejected look"
                    f" (est. ${summary.held_cost:.2f} not spent)"
                )
            line = (
                f"finished in {_duration(self._clock() - self._started)}: {', '.join(parts)};"
                f" {_spend_words(spend, spend_before)}"
            )
            if summary.interrupted:
                line += " (interrupted: run the same command again to resume)"
            elif summary.budget_stopped:
                line += " (stopped at --max-cost: raise it and run again to go on)"
            self._write_log(line)
            self._print(line)
            if summary.awaiting_verdict and not summary.interrupted:
                manifest = shlex.quote(str(self._plan.manifest_path))
                self._print(
                    f"judge the looks with `raybatch review {manifest}`: approved renders run"
                    " on the next `raybatch run` (or at once, with one kept going by"
                    " --wait-for-verdicts)"
                )

    # -- what is shown ---------------------------------------------------------------------

    def _finished(self) -> int:
        return self._counts["done"] + self._counts["failed"]

    def eta(self) -> float | None:
        """Seconds left at the throughput observed in this run, or None before any finish."""
        finished = self._finished() - self._finished_at_start
        left = len(self._plan.jobs) - self._finished() - len(self._held)
        elapsed = self._clock() - self._started
        if left <= 0:
            return 0.0
        if finished <= 0 or elapsed <= 0:
            return None
        return left * elapsed / finished

    def counts_text(self) -> str:
        """The job counters, in the order a person reads them."""
        c = self._counts
        return (
            f"done {c['done']} · failed {c['failed']} · in flight {c['in flight']}"
            f" · queued at fal {c['queued']} · waiting {c['waiting']}"
        )

    def spend_text(self) -> str:
        """What fal may have billed for this output directory, as ``status`` counts it (every
        accepted or possibly accepted submission), and the part of it from this run."""
        now = self._clock()
        if self._store is not None and now - self._spend_read >= TICK:
            self._spend, self._spend_read = self._store.spend(), now
        return _spend_words(self._spend, self._spend_before)

    def status_line(self) -> str:
        """The plain status line: time, jobs, bytes, spend and ETA."""
        eta = self.eta()
        return (
            f"[{time.strftime('%H:%M:%S')}] {self._finished()}/{len(self._plan.jobs)} jobs:"
            f" {self.counts_text()} | up {human_size(self._bytes['up'])}"
            f" down {human_size(self._bytes['down'])} | {self.spend_text()}"
            f" | elapsed {_duration(self._clock() - self._started)}"
            f" eta {'?' if eta is None else _duration(eta)}"
        )

    def _draw(self) -> None:
        bar, bytes_bar = self._jobs_bar, self._bytes_bar
        if bar is None or bytes_bar is None:
            return
        eta = self.eta()
        bar.n = self._finished()
        bar.set_postfix_str(
            f"{self.counts_text()} · {self.spend_text()}"
            f" · eta {'?' if eta is None else _duration(eta)}",
            refresh=False,
        )
        bar.refresh()
        elapsed = max(self._clock() - self._started, 1e-9)
        up, down = self._bytes["up"], self._bytes["down"]
        bytes_bar.set_description_str(
            f"bytes up {human_size(up)} ({human_size(up / elapsed)}/s)"
            f" · down {human_size(down)} ({human_size(down / elapsed)}/s)",
            refresh=True,
        )

    def _print(self, line: str) -> None:
        line = self._scrub(line)
        if self._jobs_bar is not None:
            self._jobs_bar.write(line, file=self._stream)
        else:
            print(line, file=self._stream, flush=True)

    def _write_log(self, line: str) -> None:
        if self._log is None:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            self._log.write(f"{stamp} {self._scrub(line)}\n")
        except OSError as exc:
            # A full or failing disk. The state file is the run's record (and stops the run
            # itself if it cannot be written); the log is a convenience and stops here.
            log, self._log = self._log, None
            with contextlib.suppress(OSError):
                log.close()
            self._print(
                f"raybatch: run.log can no longer be written ({exc.strerror or exc});"
                " the run goes on without it"
            )

    def _scrub(self, line: str) -> str:
        for secret in self._secrets:
            line = line.replace(secret, "***")
        return line


def _isatty(stream: IO[str]) -> bool:
    """A terminal bars can be drawn on: one that reports no columns (a bare pty, some CI
    consoles) would get bars of no width, so it gets plain lines."""
    try:
        if not stream.isatty():
            return False
    except (AttributeError, ValueError):
        return False
    try:
        return os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, ValueError, OSError):
        return True  # a terminal that cannot be measured: bars, as tqdm would size them


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


_NO_SPEND = Spend(0.0, 0.0, 0, 0, 0)


def _spend_words(spend: Spend, before: Spend) -> str:
    """``spent $X (this run $Y)``: the state's spend, as ``status`` prints it."""
    return f"spent ${spend.usd:.2f} (this run ${spend.usd - before.usd:.2f})"
