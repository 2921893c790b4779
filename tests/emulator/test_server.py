"""Serving the emulator: the ``python -m runner.emulator`` command, and the real renderer."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.emulator import EmulatorConfig, EmulatorServer

ROOT = Path(__file__).resolve().parents[2]


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start the emulator command; return it and the first line of its stdout."""
    process = subprocess.Popen(
        [sys.executable, "-m", "runner.emulator", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_command_prints_its_url_first_and_stops_on_signals(stop_signal: signal.Signals) -> None:
    """``--port 0`` prints ``listening on http://127.0.0.1:PORT`` first and exits 0 on a signal."""
    process, line = start("--port", "0", "--max-running", "3", "--job-seconds", "0.1:0.2")
    try:
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.removeprefix("listening on ")
        stats = httpx.get(f"{url}/_emulator/stats").json()
        assert stats["submits"] == 0
        process.send_signal(stop_signal)
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
        process.communicate()


def test_command_refuses_a_bad_fault_spec() -> None:
    """A bad ``--faults`` spec is reported on stderr with exit status 2, before binding."""
    process, line = start("--faults", "submit=teapot")
    _, stderr = process.communicate(timeout=20)
    assert process.returncode == 2 and line == "" and "teapot" in stderr


def test_server_context_manager_serves_then_stops() -> None:
    """EmulatorServer binds a free port, serves, and frees it on exit."""
    with EmulatorServer(EmulatorConfig(max_running=1)) as emulator:
        assert emulator.url.startswith("http://127.0.0.1:")
        assert emulator.stats()["submits"] == 0
        url = emulator.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/_emulator/stats")


def test_real_renderer_synthetic() -> None:
    """With the real render.py (synthetic mode), jobs complete with stored, served outputs."""
    pytest.importorskip("runner.emulator.render")
    config = EmulatorConfig(job_seconds=(0.05, 0.1), synthetic=True)
    with EmulatorServer(config) as emulator, httpx.Client(base_url=emulator.url) as client:
        headers = {"Authorization": "Key k"}
        handle: dict[str, Any] = client.post(
            "/luma/agent/ray/v3.2/text-to-video", json={"prompt": "dawn"}, headers=headers
        ).json()
        deadline = time.monotonic() + 30
        while client.get(handle["status_url"], headers=headers).json()["status"] != "COMPLETED":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        result = client.get(handle["response_url"], headers=headers)
        assert result.status_code == 200, result.text
        [output] = emulator.stats()["requests"][0]["outputs"]
        assert len(client.get(output["url"]).content) == output["size"] > 0
