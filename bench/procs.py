"""Child processes the bench starts: measured commands and fresh emulators.

Every process is started here, bounded by a timeout, and stopped before the bench
returns. CPU and peak RSS of a measured command come from ``os.wait4`` on its pid: the
kernel's own accounting of that process (and anything it reaped), nothing sampled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
#: The key every bench process uses; the emulator accepts any key.
BENCH_KEY = "bench-key-0123456789"


def child_env() -> dict[str, str]:
    """The environment for runner, peer and emulator: no real fal credentials, ever."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    env["FAL_KEY"] = BENCH_KEY
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Measured:
    """A finished command: exit code, wall time, CPU (user + sys) and peak RSS."""

    returncode: int
    wall: float
    user: float
    sys: float
    maxrss_mb: float
    started_at: float  # wall clock (time.time) just before the spawn

    @property
    def cpu(self) -> float:
        """User + system CPU seconds."""
        return self.user + self.sys


def _reap(pid: int, deadline: float) -> tuple[int, Any] | None:
    """``os.wait4`` the child, polling so a deadline can be kept; None if it passed."""
    while True:
        got, status, usage = os.wait4(pid, os.WNOHANG)
        if got == pid:
            return status, usage
        if time.monotonic() > deadline:
            return None
        time.sleep(0.005)


class Running:
    """A command started with :func:`spawn`; :meth:`finish` reaps it with its rusage."""

    def __init__(self, process: subprocess.Popen[bytes], started_at: float, log: IO[bytes]):
        self.process = process
        self.started_at = started_at
        self._t0 = time.monotonic()
        self._log = log
        self._reaped: tuple[int, Any] | None = None
        self._ended = 0.0

    def alive(self) -> bool:
        """Whether the child still runs (reaping it, with its rusage, if it ended).

        Never ``Popen.poll()``: that reaps the child and its rusage is lost.
        """
        if self._reaped is None:
            got = _reap(self.pid, 0.0)
            if got is not None:
                self._reaped, self._ended = got, time.monotonic()
        return self._reaped is None

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def signal(self, signum: int) -> None:
        """Send a signal if the child has not been reaped yet."""
        if self.alive():
            os.kill(self.process.pid, signum)

    def finish(self, timeout: float, *, kill_ok: bool = False) -> Measured:
        """Wait (at most ``timeout`` s, then SIGTERM, SIGKILL) and measure the child.

        A child that had to be killed raises ``TimeoutError`` unless ``kill_ok``.
        """
        reaped = self._reaped or _reap(self.pid, time.monotonic() + timeout)
        timed_out = reaped is None
        if reaped is None:
            os.kill(self.pid, signal.SIGTERM)
            reaped = _reap(self.pid, time.monotonic() + 10)
        if reaped is None:
            os.kill(self.pid, signal.SIGKILL)
            reaped = _reap(self.pid, time.monotonic() + 10)
        assert reaped is not None, "a killed child did not exit"
        wall = (self._ended or time.monotonic()) - self._t0
        status, usage = reaped
        code = os.waitstatus_to_exitcode(status)
        self.process.returncode = code  # reaped here: Popen must not wait for it again
        self._log.close()
        if timed_out and not kill_ok:
            raise TimeoutError(f"{self.process.args!r} ran longer than {timeout:.0f} s")
        return Measured(
            code, wall, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024, self.started_at
        )


def spawn(command: list[str], *, cwd: Path, log: Path) -> Running:
    """Start ``command`` with its output going to ``log``."""
    out = log.open("wb")
    started_at = time.time()
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=child_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    return Running(process, started_at, out)


def measure(command: list[str], *, cwd: Path, log: Path, timeout: float) -> Measured:
    """Run ``command`` to its end and measure it."""
    return spawn(command, cwd=cwd, log=log).finish(timeout)


def python(*args: str) -> list[str]:
    """A command line running this interpreter."""
    return [sys.executable, *args]


class Emulator:
    """``python -m runner.emulator`` on a free loopback port, in synthetic-output mode."""

    def __init__(
        self,
        work: Path,
        *,
        limit: int,
        durations: tuple[float, float],
        seed: int,
        name: str = "emulator",
        extra: tuple[str, ...] = (),
    ) -> None:
        low, high = durations
        command = python(
            "-m",
            "runner.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--synthetic",
            "--max-running",
            str(limit),
            "--job-seconds",
            f"{low}:{high}",
            "--seed",
            str(seed),
            *extra,
        )
        self._stderr = (work / f"{name}.log").open("wb")
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=child_env(),
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("listening on http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"the emulator did not start (said {line!r})")
        self.url = line.removeprefix("listening on ")

    def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats``."""
        with urllib.request.urlopen(self.url + "/_emulator/stats", timeout=60) as answer:
            data: dict[str, Any] = json.load(answer)
        return data

    def cpu_seconds(self) -> float:
        """User + system CPU the emulator process has used so far."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL if it must (idempotent)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
