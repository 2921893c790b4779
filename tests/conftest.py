"""Shared fixtures: a real emulator process on loopback, and the real CLI in a subprocess.

The runner is always driven as a user drives it (``python -m runner ...`` in a child
process) so that exit codes, stderr, signals and SIGKILL are the real thing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
TEST_KEY = "test-key-0123456789"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Long sweeps (``@pytest.mark.slow``) run only when asked for with ``-m slow``."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a long sweep: run it with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _private_state_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep the per-user index of output directories (runner/registry.py) and the plan
    cache (runner/plan_cache.py) out of $HOME."""
    names = ("XDG_STATE_HOME", "XDG_CACHE_HOME")
    old = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ[name] = str(tmp_path_factory.mktemp(name.lower()))
    yield
    for name, value in old.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@dataclass
class Emulator:
    """A running emulator process: its URL, and a reader for its stats."""

    url: str
    process: subprocess.Popen[str]

    def stats(self) -> dict[str, Any]:
        """GET /_emulator/stats."""
        return self.stats_at(self.url)

    def stats_at(self, origin: str) -> dict[str, Any]:
        """GET /_emulator/stats from one of its origins (every origin serves them)."""
        with urllib.request.urlopen(origin + "/_emulator/stats", timeout=10) as answer:
            data: dict[str, Any] = json.load(answer)
        return data

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST JSON to an /_emulator/ route."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            data: dict[str, Any] = json.load(answer)
        return data


def start_emulator(*args: str) -> Emulator:
    """Start ``python -m runner.emulator`` on a free loopback port and wait for its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "runner.emulator", "--host", "127.0.0.1", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    assert line.startswith("listening on http://127.0.0.1:"), line
    return Emulator(line.removeprefix("listening on "), process)


def stop_emulator(emulator: Emulator) -> None:
    """Stop an emulator process."""
    emulator.process.send_signal(signal.SIGTERM)
    try:
        emulator.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        emulator.process.kill()
        emulator.process.wait()
    if emulator.process.stdout is not None:
        emulator.process.stdout.close()


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A fresh emulator with short jobs, outliving any runner the test starts."""
    emu = start_emulator("--job-seconds", "0.3:0.8", "--seed", "1")
    try:
        yield emu
    finally:
        stop_emulator(emu)


def run_cli(
    *args: str | Path, cwd: Path | None = None, key: str | None = TEST_KEY, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m runner`` like a user would; returns the finished process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")}
    if key is not None:
        env["FAL_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=cwd or ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def spawn_cli(
    *args: str | Path,
    cwd: Path,
    key: str | None = TEST_KEY,
    env: dict[str, str] | None = None,
    own_group: bool = False,
) -> subprocess.Popen[str]:
    """Start ``python -m runner`` in the background (for signal and kill tests); with
    ``own_group`` in its own process group, as a terminal's foreground job (``os.killpg``
    then signals it as Ctrl-C would)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAL_")} | (env or {})
    if key is not None:
        env["FAL_KEY"] = key
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=own_group,
    )


def count_rows(db: Path, sql: str) -> int:
    """One number from a state file another process is writing (0 while it is not there
    or has no tables yet)."""
    if not db.exists():
        return 0
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute(sql).fetchone()[0] or 0)
    except sqlite3.Error:
        return 0
    finally:
        conn.close()


def wait_for_stats(
    emulator: Emulator, predicate: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    """Poll the emulator's stats until ``predicate`` holds; returns them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = emulator.stats()
        if predicate(stats):
            return stats
        time.sleep(0.05)
    raise AssertionError("the emulator never reached the expected state")


def one_clip_manifest(
    tmp_path: Path,
    prompts: int,
    *,
    name: str = "small",
    output: str = "{clip}/{prompt}.mp4",
    concurrency: int = 3,
) -> Path:
    """A manifest of the demo's city clip × ``prompts`` prompts, written in ``tmp_path``."""
    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    shutil.copy(MANIFESTS / "media" / "city.mp4", media / "city.mp4")
    lines = [
        f"name: {name}",
        "endpoint: luma/agent/ray/v3.2/video-to-video",
        f'output: "{output}"',
        f"concurrency: {concurrency}",
        "clips: [media/city.mp4]",
        "prompts:",
        *(f'  p{i}: "prompt number {i}, in warm colours"' for i in range(prompts)),
    ]
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A private copy of the demo manifest and its media; returns the manifest path."""
    shutil.copytree(MANIFESTS / "media", tmp_path / "media", ignore=shutil.ignore_patterns("*.py"))
    target = tmp_path / "demo.yaml"
    shutil.copy(MANIFESTS / "demo.yaml", target)
    return target
