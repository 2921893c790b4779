"""Secrets and hostile services: the key stays in memory, remote names stay out of paths.

* A canary key used through a full run with faults (503s, 429s, truncated downloads, a
  dropped submit) never appears in any file under the output directory (``state.db`` and
  its ``-wal``, ``results.jsonl``, ``run.log``, ``index.html``, ...), in stdout or stderr,
  in a stored error, or in ``status --json``; a 401 says the key is wrong without
  repeating it.
* A compromised fal (the emulator's ``hostile`` fault) that names files ``../../x``,
  ``/abs``, with NUL bytes or 5000 bytes long, adds result fields with such names, and
  points files at ``file://`` and ``ftp://``, cannot make raybatch write outside the
  output directory; nor can symlinks planted in the output directory before the run.
* The state file, its WAL and the logs are owner-only; the emulator binds to loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runner.emulator.config import EmulatorConfig

from .conftest import (
    ROOT,
    Emulator,
    one_clip_manifest,
    run_cli,
    spawn_cli,
    start_emulator,
    stop_emulator,
)

CANARY = "canary-SECRET-7f3a9c"
FAULTS = (
    "seed=3; submit#1=503; submit#2=drop-after; cdn#1=truncate;"
    " submit=503@0.2; status=429@0.1; cdn=truncate@0.2"
)
OWNER_ONLY = ("state.db", "state.db-wal", "state.db-shm", "run.log", "results.jsonl")


def _manifest(tmp_path: Path, prompts: int, output: str = "{clip}/{prompt}.mp4") -> Path:
    return one_clip_manifest(tmp_path, prompts, name="secure", output=output)


def _leaks(root: Path, secret: str = CANARY) -> list[str]:
    """Files under ``root`` whose bytes hold the secret (as text, UTF-16 or base64 of it)."""
    needles = [secret.encode(), secret.encode("utf-16-le"), secret.encode()[4:-4]]
    return [
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_file() and any(needle in path.read_bytes() for needle in needles)
    ]


def _rows(out: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(out / "state.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM jobs")]
    finally:
        db.close()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- the canary run


@dataclass
class CanaryRun:
    """A whole faulty run with the canary key, and everything it said and left behind."""

    tmp: Path
    out: Path
    code: int
    said: str  # stdout + stderr of run, status --json, plan --json, report
    status: dict[str, Any]
    stats: dict[str, Any]
    modes: dict[str, int]  # file modes seen while the run was going (the WAL exists then)


@pytest.fixture(scope="module")
def canary_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CanaryRun]:
    """Run 9 jobs with the canary key against an emulator throwing FAULTS, then ask status."""
    tmp = tmp_path_factory.mktemp("canary")
    manifest = _manifest(tmp, prompts=9)
    out = tmp / "out"
    emulator = start_emulator("--synthetic", "--job-seconds", "0.3:0.6", "--faults", FAULTS)
    try:
        runner = spawn_cli(
            "run", manifest, "--fal-url", emulator.url, "--output-dir", out, "-v",
            cwd=tmp, key=CANARY,
        )  # fmt: skip
        modes: dict[str, int] = {}
        while runner.poll() is None:  # the WAL and -shm only exist while the run goes on
            for name in OWNER_ONLY:
                path = out / name
                if name not in modes and path.exists():
                    modes[name] = _mode(path)
            time.sleep(0.01)
        stdout, stderr = runner.communicate(timeout=120)
        said = [stdout, stderr]
        status = run_cli("status", manifest, "--json", "--output-dir", out, cwd=tmp, key=CANARY)
        said += [status.stdout, status.stderr]
        for extra in (("plan", "--json"), ("report",)):
            done = run_cli(extra[0], manifest, *extra[1:], "--output-dir", out, cwd=tmp, key=CANARY)
            said += [done.stdout, done.stderr]
        yield CanaryRun(
            tmp,
            out,
            runner.returncode,
            "\n".join(said),
            json.loads(status.stdout),
            emulator.stats(),
            modes,
        )
    finally:
        stop_emulator(emulator)


def test_canary_run_met_the_faults_and_finished(canary_run: CanaryRun) -> None:
    """The canary run met 503s, a truncated download and a dropped submit, and finished."""
    assert canary_run.code == 0, canary_run.said
    assert {r["state"] for r in _rows(canary_run.out)} == {"done"}
    fired = canary_run.stats["faults"]
    assert fired["submit"].get("drop-after") == 1
    assert fired["submit"].get("503", 0) >= 1
    assert fired.get("cdn", {}).get("truncate", 0) >= 1


def test_canary_key_is_in_no_file_of_the_output_dir(canary_run: CanaryRun) -> None:
    """No file under the output dir (state.db, WAL, results, logs, review page) holds the key."""
    names = {p.name for p in canary_run.out.rglob("*")}
    assert {"state.db", "results.jsonl", "run.log", "index.html"} <= names
    assert _leaks(canary_run.tmp) == []


def test_canary_key_is_never_printed(canary_run: CanaryRun) -> None:
    """stdout and stderr of run -v, status --json, plan --json and report omit the key."""
    assert canary_run.said.strip()
    assert CANARY not in canary_run.said
    assert CANARY[4:-4] not in canary_run.said


def test_status_json_and_stored_errors_omit_the_key(canary_run: CanaryRun) -> None:
    """status --json and every stored error or note (the exception texts) omit the key."""
    assert CANARY not in json.dumps(canary_run.status)
    texts = [str(v) for row in _rows(canary_run.out) for v in row.values() if v is not None]
    assert texts and not [t for t in texts if CANARY in t]


def test_state_wal_and_logs_are_owner_only(canary_run: CanaryRun) -> None:
    """state.db, its -wal and -shm (seen during the run), run.log and results.jsonl are 0600."""
    assert set(canary_run.modes) == set(OWNER_ONLY), canary_run.modes
    assert canary_run.modes == dict.fromkeys(OWNER_ONLY, 0o600)
    for name in ("state.db", "run.log", "results.jsonl"):
        assert _mode(canary_run.out / name) == 0o600, name


def test_bad_key_message_does_not_repeat_the_key(tmp_path: Path) -> None:
    """A 401 stops the run (exit 3) saying the key was rejected, never quoting it."""
    emulator = start_emulator("--synthetic", "--job-seconds", "0.2:0.3", "--faults", "submit=auth")
    try:
        manifest = _manifest(tmp_path, prompts=2)
        out = tmp_path / "out"
        done = run_cli(
            "run", manifest, "--fal-url", emulator.url, "--output-dir", out, key=CANARY,
            cwd=tmp_path,
        )  # fmt: skip
        status = run_cli("status", manifest, "--json", "--output-dir", out, key=CANARY)
    finally:
        stop_emulator(emulator)
    assert done.returncode == 3, done.stderr
    assert "fal rejected the API key (HTTP 401)" in done.stderr
    assert "Traceback" not in done.stderr
    assert CANARY not in done.stdout + done.stderr + status.stdout + status.stderr
    assert _leaks(tmp_path) == []


# --------------------------------------------------------------------------- hostile names


@pytest.fixture
def hostile_emulator() -> Iterator[Emulator]:
    """An emulator whose every result is rewritten by the ``hostile`` fault."""
    emu = start_emulator("--synthetic", "--job-seconds", "0.2:0.3", "--faults", "result=hostile")
    try:
        yield emu
    finally:
        stop_emulator(emu)


def _outside_snapshot(tmp_path: Path) -> dict[str, Any]:
    passwd = Path("/etc/passwd")
    return {
        "passwd": hashlib.sha256(passwd.read_bytes()).hexdigest(),
        "hostile_tmp": Path("/tmp/raybatch-hostile").exists(),
        "tmp_siblings": sorted(p.name for p in tmp_path.parent.iterdir()),
        "tmp_top": sorted(p.name for p in tmp_path.iterdir() if p.name != "out"),
    }


def test_hostile_result_names_cannot_place_files_outside(
    tmp_path: Path, hostile_emulator: Emulator
) -> None:
    """Hostile remote names land as harmless names inside the output dir; file:// is refused."""
    manifest = _manifest(tmp_path, prompts=2)
    out = tmp_path / "out"
    before = _outside_snapshot(tmp_path)
    done = run_cli("run", manifest, "--fal-url", hostile_emulator.url, "--output-dir", out)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    assert _outside_snapshot(tmp_path) == before
    assert hostile_emulator.stats()["faults"]["result"]["hostile"] >= 2
    rows = _rows(out)
    assert {r["state"] for r in rows} == {"failed"}
    assert {r["error_class"] for r in rows} == {"UnsafeOutput"}
    assert all("file://" in r["error"] for r in rows), [r["error"] for r in rows]
    passwd = Path("/etc/passwd").read_bytes()
    base = out.resolve()
    written = [p for p in out.rglob("*") if p.is_file()]
    for path in written:
        assert path.resolve().is_relative_to(base), path
        assert len(path.name.encode()) <= 255 and "\0" not in str(path)
        assert path.read_bytes() != passwd, f"{path} is a copy of /etc/passwd"
    outputs = {p.relative_to(out).as_posix() for p in written if p.parent.name == "city"}
    # The main output keeps the manifest's name; the hostile extras got sanitised names
    # beside it (the remote names only ever supply an extension).
    assert {"city/p0.mp4", "city/p1.mp4"} <= outputs
    assert any(".evil" in name for name in outputs), outputs
    assert not any(".." in Path(name).name.removesuffix(".mp4") for name in outputs), outputs


def test_symlinks_planted_in_the_output_dir_are_not_written_through(
    tmp_path: Path, emulator: Emulator
) -> None:
    """Symlinks planted at an output or its parent fail that job; their targets stay untouched."""
    manifest = _manifest(tmp_path, prompts=4, output="{prompt}/{clip}.mp4")
    out, outside = tmp_path / "out", tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "precious.mp4").write_bytes(b"precious")
    for name in ("p1", "p2"):
        (out / name).mkdir(parents=True)
    (out / "p0").symlink_to(outside / "dir")  # the parent directory
    (out / "p1" / "city.mp4").symlink_to(outside / "precious.mp4")  # the file itself
    (out / "p2" / "city.mp4").symlink_to(outside / "new.mp4")  # a dangling link
    done = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out)
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 1, done.stderr
    assert sorted(p.name for p in outside.rglob("*")) == ["dir", "precious.mp4"]
    assert (outside / "precious.mp4").read_bytes() == b"precious"
    states = {r["prompt"]: (r["state"], r["error_class"]) for r in _rows(out)}
    assert states == {
        "p0": ("failed", "UnsafeOutput"),
        "p1": ("failed", "UnsafeOutput"),
        "p2": ("failed", "UnsafeOutput"),
        "p3": ("done", None),
    }
    assert (out / "p3" / "city.mp4").is_file() and not (out / "p3" / "city.mp4").is_symlink()


# --------------------------------------------------------------------------- the emulator


def test_emulator_binds_to_loopback_unless_told_otherwise() -> None:
    """`raybatch emulator` without --host listens on 127.0.0.1, the configured default."""
    assert EmulatorConfig().host == "127.0.0.1"
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", "emulator", "--port", "0", "--synthetic"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("FAL_")},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert line.startswith("listening on http://127.0.0.1:"), line
