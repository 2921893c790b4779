"""Start the emulator as a child process for ``raybatch run --local``.

A separate process rather than a thread: rendering media is CPU-bound, and the runner's
event loop should not share a GIL with it. The child prints ``listening on URL`` first;
we wait for that line, and stop the child when the run ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

#: Job durations for the offline demo: long enough to watch, short enough to finish fast.
LOCAL_JOB_SECONDS = "1:3"


@contextmanager
def local_emulator(*extra_args: str) -> Iterator[str]:
    """Run an emulator on a free loopback port for the duration of the block; yield its URL."""
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
        *extra_args,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().strip()
        if not line.startswith("listening on "):
            raise RuntimeError(f"the built-in emulator did not start (said {line!r})")
        yield line.removeprefix("listening on ")
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
