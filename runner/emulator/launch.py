"""Start the emulator as a child process for ``raybatch run --local``.

A separate process rather than a thread: rendering media is CPU-bound, and the runner's
event loop should not share a GIL with it. The child prints ``listening on URL`` first;
we wait for that line, and stop the child when the run ends.

The child runs in its own session (process group), so a Ctrl-C at the terminal reaches
only the runner, which can then drain its jobs against an emulator that is still there.
It never outlives the runner: its standard input is a pipe whose other end only the
runner holds, and it shuts down (cleanly, saving its state) at that pipe's end of file,
which comes when the runner closes it or dies, even by SIGKILL. A pipe rather than
Linux's ``PR_SET_PDEATHSIG``: it works on every POSIX system, it fires when the *process*
dies (a death signal fires when the *thread* that forked does, which for a runner that
starts the emulator from a worker thread is too early), and the child gets to save its
state instead of being killed.

With ``state_dir`` (``<output_dir>/.emulator`` for ``run --local``) the emulator keeps its
requests, results, files and CDN tokens there, and binds the origins recorded there again
(see ``server.py``): the next ``run --local`` finds the same requests at the same URLs and
re-attaches to them. When a recorded port is taken, the emulator serves on a new one and
``notify`` is told so (default: a line on stderr).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ._persist import read_origins

#: Job durations for the offline demo: long enough to watch, short enough to finish fast.
LOCAL_JOB_SECONDS = "1:3"
#: Seconds the child has to save its state and exit after its stdin closes.
STOP_SECONDS = 15.0


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def local_emulator(
    *extra_args: str,
    state_dir: Path | None = None,
    notify: Callable[[str], None] = _stderr,
) -> Iterator[str]:
    """Run an emulator on loopback for the duration of the block; yield its queue URL.

    ``state_dir``: keep the emulator's state there, across runs (see the module
    docstring); its log goes to ``state_dir/emulator.log``.
    """
    command = [
        sys.executable,
        "-m",
        "runner.emulator",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--job-seconds",
        LOCAL_JOB_SECONDS,
        "--exit-with-stdin",
    ]
    recorded: dict[str, str] = {}
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
        recorded = read_origins(state_dir)
        command += ["--state-dir", str(state_dir)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    log = (state_dir / "emulator.log").open("ab") if state_dir is not None else None
    try:
        child = subprocess.Popen(
            [*command, *extra_args],
            stdout=subprocess.PIPE,
            stderr=log or subprocess.DEVNULL,
            stdin=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
    finally:
        if log is not None:
            log.close()
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the built-in emulator did not start (said {line!r})")
        url = line.removeprefix("listening on ")
        if recorded.get("queue") not in (None, url):
            notify(
                f"raybatch: the built-in emulator could not reuse {recorded['queue']} (the port"
                f" is taken) and serves on {url}: requests recorded with the old address are"
                " reached through the new one"
            )
        yield url
    finally:
        _stop(child)


def _stop(child: subprocess.Popen[str]) -> None:
    """Close the child's stdin (it exits cleanly at EOF); terminate or kill if it hangs."""
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            stream.close()
    try:
        child.wait(timeout=STOP_SECONDS)
    except subprocess.TimeoutExpired:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
