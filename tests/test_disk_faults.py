"""A full disk or a failing one: the run stops cleanly, nothing false is recorded, and the
same command finishes the batch once space is back.

Two ways of making the disk fail (style-reliability §B.5, T3):

* a real full file system: a small tmpfs mounted under the test's directory (needs root;
  skipped elsewhere), where ENOSPC comes from the kernel wherever the run happens to
  write: an output, the state's WAL, ``results.jsonl``;
* a patched file layer, for errors no test can provoke for real (EIO): ``os.write``,
  ``os.fsync`` and ``os.replace`` as ``runner/outputs/_atomic.py`` sees them, and the state's
  SQLite ``COMMIT``, failing from their k-th call. These runs go through
  ``runner.cli.main`` in-process (the console script's code path) so the patch applies.

Every failing run must exit 3 with the path or the state file and the OS's words for the
error, print no traceback, and leave every ``done`` job complete on disk with its recorded
size and sha256 (and every file under a final name complete). The next run, with the
fault gone, must finish every job with no submission beyond the ambiguous ones it counts.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from runner import cli
from runner.outputs import _atomic as dl
from runner.report import _progress as progress
from runner.state import _store as state_module

from .conftest import (
    TEST_KEY,
    Emulator,
    one_clip_manifest,
    run_cli,
    start_emulator,
    stop_emulator,
)

JOBS = 9


def _manifest(tmp_path: Path) -> Path:
    return one_clip_manifest(tmp_path, JOBS, name="disk")


def _rows(out: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{out / 'state.db'}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        made = db.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone()
        # The very first commit makes the schema: when it fails, the file holds nothing.
        return [dict(r) for r in db.execute("SELECT * FROM jobs")] if made else []
    finally:
        db.close()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_nothing_false(out: Path, emulator: Emulator) -> list[dict[str, Any]]:
    """Every done job's files exist with the recorded size and sha256, which are the
    emulator's; every file under a final name is complete. Returns the rows."""
    served = {o["url"]: o for r in emulator.stats()["requests"] for o in r["outputs"]}
    rows = _rows(out)
    for row in rows:
        if row["state"] != "done":
            continue
        for output in json.loads(row["outputs"]):
            path = out / output["path"]
            assert path.is_file(), f"done job {row['prompt']} has no {output['path']}"
            assert path.stat().st_size == output["size"]
            assert _sha(path) == output["sha256"] == served[output["url"]]["sha256"]
    complete = {o["sha256"] for o in served.values()}
    for path in out.rglob("*.mp4"):
        assert _sha(path) in complete, f"{path} is under its final name but incomplete"
    return rows


def check_finished_once(out: Path, emulator: Emulator) -> None:
    """All jobs done, intact, no .part left, and fal saw each job once plus the counted
    ambiguous submits."""
    rows = check_nothing_false(out, emulator)
    assert len(rows) == JOBS and {r["state"] for r in rows} == {"done"}
    assert not list(out.rglob("*.part"))
    stats = emulator.stats()
    ambiguous = sum(r["ambiguous"] for r in rows)
    assert stats["distinct_inputs"] == JOBS
    assert stats["submits"] == JOBS + ambiguous, (stats["submits"], ambiguous)


# --------------------------------------------------------------------------- a real full disk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], None]]:
    """A 700 KB tmpfs at tmp_path/disk; the fixture's value resizes it (e.g. "64m")."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=700k,mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")

    def resize(size: str) -> None:
        subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(mount_point)], check=True, timeout=30
        )

    try:
        yield resize
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False, timeout=30)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    """A fresh emulator with short synthetic jobs."""
    emulator = start_emulator("--synthetic", "--job-seconds", "0.2:0.4", "--seed", "5")
    try:
        yield emulator
    finally:
        stop_emulator(emulator)


def _assert_clean_stop(code: int, stderr: str, *words: str) -> None:
    assert "Traceback" not in stderr, stderr
    assert code == 3, f"exit {code}\n{stderr}"
    assert any(word in stderr for word in words), stderr


def test_disk_full_mid_run_stops_cleanly_then_the_same_command_finishes(
    tmp_path: Path, small_disk: Callable[[str], None], emu: Emulator
) -> None:
    """A real ENOSPC mid-run exits 3 cleanly; after the disk grows the same command finishes."""
    manifest = _manifest(tmp_path)
    out = tmp_path / "disk" / "out"
    args = ("run", manifest, "--fal-url", emu.url, "--output-dir", out)
    first = run_cli(*args, cwd=tmp_path)
    _assert_clean_stop(first.returncode, first.stderr, "No space left on device", "disk is full")
    rows = check_nothing_false(out, emu)
    assert [r for r in rows if r["state"] != "done"], "the disk was never full"
    small_disk("64m")
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    check_finished_once(out, emu)


def test_run_on_an_already_full_disk_stops_cleanly(
    tmp_path: Path, small_disk: Callable[[str], None], emu: Emulator
) -> None:
    """A run started on a full disk exits 3 cleanly, submitting nothing; then it finishes."""
    manifest = _manifest(tmp_path)
    filler = tmp_path / "disk" / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="No space left"):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    out = tmp_path / "disk" / "out"
    args = ("run", manifest, "--fal-url", emu.url, "--output-dir", out)
    first = run_cli(*args, cwd=tmp_path)
    _assert_clean_stop(first.returncode, first.stderr, "No space left on device", "disk is full")
    assert emu.stats()["submits"] == 0
    filler.unlink()
    small_disk("64m")
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    check_finished_once(out, emu)


# --------------------------------------------------------------------------- a patched file layer


class _Fault:
    """Fails calls from the ``start``-th on (``once``: only that one) with ``error``.

    For COMMITs, ``statement`` narrows the calls counted to transactions that ran a
    statement containing it (e.g. the one recording a request id).
    """

    def __init__(
        self, error: int, start: int, *, once: bool = False, statement: str | None = None
    ) -> None:
        self.error, self.start, self.once, self.statement = error, start, once, statement
        self.calls = 0
        self.fired = 0

    def hit(self) -> bool:
        self.calls += 1
        due = self.calls == self.start if self.once else self.calls >= self.start
        self.fired += due
        return due


class _FaultyOs:
    """``os`` as runner/download.py sees it, with one function failing per ``fault``."""

    def __init__(self, name: str, fault: _Fault) -> None:
        real = getattr(os, name)

        def failing(*args: Any, **kwargs: Any) -> Any:
            if fault.hit():
                raise OSError(fault.error, os.strerror(fault.error))
            return real(*args, **kwargs)

        setattr(self, name, failing)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


class _FaultyConnection:
    """A sqlite3 connection whose COMMITs fail per ``fault`` (rolled back, as SQLite does)."""

    def __init__(self, conn: sqlite3.Connection, fault: _Fault, message: str) -> None:
        object.__setattr__(self, "_conn", conn)
        object.__setattr__(self, "_fault", fault)
        object.__setattr__(self, "_message", message)
        object.__setattr__(self, "_marked", False)

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        verb = sql.strip().upper()
        wanted = self._fault.statement
        if wanted is not None and wanted in sql:
            object.__setattr__(self, "_marked", True)
        if verb == "COMMIT" and (wanted is None or self._marked) and self._fault.hit():
            object.__setattr__(self, "_marked", False)
            self._conn.execute("ROLLBACK")
            raise sqlite3.OperationalError(self._message)
        if verb in ("COMMIT", "ROLLBACK", "BEGIN IMMEDIATE"):
            object.__setattr__(self, "_marked", False)
        cursor: sqlite3.Cursor = self._conn.execute(sql, *args)
        return cursor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)


class _FaultySqlite:
    """The sqlite3 module as runner/state.py sees it: connections with failing COMMITs."""

    def __init__(self, fault: _Fault, message: str) -> None:
        self._fault, self._message = fault, message

    def connect(self, *args: Any, **kwargs: Any) -> _FaultyConnection:
        return _FaultyConnection(sqlite3.connect(*args, **kwargs), self._fault, self._message)

    def __getattr__(self, name: str) -> Any:
        return getattr(sqlite3, name)


@pytest.fixture(scope="module")
def shared_emulator() -> Iterator[Emulator]:
    """One emulator for the patched-layer runs (reset before each test)."""
    emulator = start_emulator("--synthetic", "--job-seconds", "0.2:0.4", "--seed", "6")
    try:
        yield emulator
    finally:
        stop_emulator(emulator)


@pytest.fixture
def run_here(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    shared_emulator: Emulator,
) -> Callable[[], tuple[int, str]]:
    """``raybatch run`` in-process on a fresh 9-job manifest; returns (exit code, stderr)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAL_KEY", TEST_KEY)
    shared_emulator.post("/_emulator/reset", {})
    manifest = _manifest(tmp_path)
    argv = ["run", str(manifest), "--fal-url", shared_emulator.url, "--output-dir", "out"]

    def run() -> tuple[int, str]:
        code = cli.main(argv)
        return code, capsys.readouterr().err

    return run


DOWNLOAD_FAULTS = [
    pytest.param("write", errno.ENOSPC, 1, False, id="write-ENOSPC-first"),
    pytest.param("write", errno.ENOSPC, 6, False, id="write-ENOSPC-6th"),
    pytest.param("write", errno.EIO, 4, True, id="write-EIO-4th-once"),
    pytest.param("fsync", errno.EIO, 3, False, id="fsync-EIO-3rd"),
    pytest.param("fsync", errno.EIO, 4, True, id="fsync-EIO-4th-once"),
    pytest.param("replace", errno.EIO, 2, False, id="rename-EIO-2nd"),
]


@pytest.mark.parametrize(("call", "error", "start", "once"), DOWNLOAD_FAULTS)
def test_download_disk_error_stops_cleanly_then_resumes(
    call: str,
    error: int,
    start: int,
    once: bool,
    run_here: Callable[[], tuple[int, str]],
    monkeypatch: pytest.MonkeyPatch,
    shared_emulator: Emulator,
) -> None:
    """ENOSPC/EIO in the k-th download write, fsync or rename: exit 3, then a clean resume."""
    fault = _Fault(error, start, once=once)
    with monkeypatch.context() as patched:
        patched.setattr(dl, "os", _FaultyOs(call, fault))
        code, stderr = run_here()
    assert fault.fired, "the fault never fired"
    _assert_clean_stop(code, stderr, os.strerror(error))
    assert f"({errno.errorcode[error]})" in stderr and str(Path.cwd() / "out") in stderr
    check_nothing_false(Path("out"), shared_emulator)
    code, stderr = run_here()
    assert code == 0, stderr
    check_finished_once(Path("out"), shared_emulator)
    assert shared_emulator.stats()["submits"] == JOBS  # download faults cost no submit


STATE_FAULTS = [
    pytest.param(1, "disk I/O error", id="EIO-first-commit"),
    pytest.param(4, "disk I/O error", id="EIO-4th-commit"),
    pytest.param(12, "database or disk is full", id="FULL-12th-commit"),
    pytest.param(25, "disk I/O error", id="EIO-25th-commit"),
]


@pytest.mark.parametrize(("start", "message"), STATE_FAULTS)
def test_state_commit_failure_stops_cleanly_then_resumes(
    start: int,
    message: str,
    run_here: Callable[[], tuple[int, str]],
    monkeypatch: pytest.MonkeyPatch,
    shared_emulator: Emulator,
) -> None:
    """The state's k-th COMMIT failing (EIO or full): exit 3, nothing false, then a resume."""
    fault = _Fault(0, start)
    with monkeypatch.context() as patched:
        patched.setattr(state_module, "sqlite3", _FaultySqlite(fault, message))
        code, stderr = run_here()
    assert fault.fired, "the fault never fired"
    _assert_clean_stop(code, stderr, f"cannot write the state file: {message}")
    check_nothing_false(Path("out"), shared_emulator)
    code, stderr = run_here()
    assert code == 0, stderr
    check_finished_once(Path("out"), shared_emulator)


def test_state_still_failing_on_the_next_run_stops_cleanly_again(
    run_here: Callable[[], tuple[int, str]],
    monkeypatch: pytest.MonkeyPatch,
    shared_emulator: Emulator,
) -> None:
    """A disk still failing on the next run (settling an ambiguous submit) exits 3 again."""
    first = _Fault(0, 1, statement="UPDATE attempts SET request_id")
    with monkeypatch.context() as patched:
        patched.setattr(state_module, "sqlite3", _FaultySqlite(first, "disk I/O error"))
        code, stderr = run_here()
    _assert_clean_stop(code, stderr, "cannot write the state file: disk I/O error")
    rows = check_nothing_false(Path("out"), shared_emulator)
    assert "submitting" in {r["state"] for r in rows}, "no submit was left unrecorded"
    still = _Fault(0, 2)  # the plan's own commit passes, the next one fails
    with monkeypatch.context() as patched:
        patched.setattr(state_module, "sqlite3", _FaultySqlite(still, "disk I/O error"))
        code, stderr = run_here()
    assert still.fired
    _assert_clean_stop(code, stderr, "cannot write the state file: disk I/O error")
    check_nothing_false(Path("out"), shared_emulator)
    code, stderr = run_here()
    assert code == 0, stderr
    check_finished_once(Path("out"), shared_emulator)
    assert sum(r["ambiguous"] for r in _rows(Path("out"))) >= 1


class _FailingFile:
    """A text file whose writes fail from the ``start``-th on with ENOSPC."""

    def __init__(self, real: Any, fault: _Fault) -> None:
        self._real, self._fault = real, fault

    def write(self, text: str) -> int:
        if self._fault.hit():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written: int = self._real.write(text)
        return written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_run_log_that_cannot_be_written_does_not_crash_the_run(
    run_here: Callable[[], tuple[int, str]],
    monkeypatch: pytest.MonkeyPatch,
    shared_emulator: Emulator,
) -> None:
    """run.log hitting ENOSPC is said once; the run goes on and finishes every job."""
    fault = _Fault(errno.ENOSPC, 5)
    real_fdopen = os.fdopen

    class _LogOs:
        def fdopen(self, *args: Any, **kwargs: Any) -> _FailingFile:
            return _FailingFile(real_fdopen(*args, **kwargs), fault)

        def __getattr__(self, name: str) -> Any:
            return getattr(os, name)

    with monkeypatch.context() as patched:
        patched.setattr(progress, "os", _LogOs())
        code, stderr = run_here()
    assert fault.fired
    assert "Traceback" not in stderr, stderr
    assert code == 0, stderr
    assert stderr.count("run.log") == 1 and "No space left on device" in stderr, stderr
    check_finished_once(Path("out"), shared_emulator)
