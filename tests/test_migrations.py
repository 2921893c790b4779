"""A state file written by raybatch 0.1.0 (commit 6a2e1b0, schema 1) keeps working.

The fixture in ``tests/data/state_v1`` was written by that commit's own code (see its
README): three jobs done with their files, one failed (moderated, paid), two pending (one
of them after a refused POST, never paid).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from runner.state import SCHEMA_VERSION, JobState, StateStore
from runner.state._schema import MIGRATIONS

from .conftest import Emulator, run_cli

FIXTURE = Path(__file__).parent / "data" / "state_v1"


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """A private copy of the fixture; returns its manifest."""
    shutil.copytree(FIXTURE, tmp_path / "legacy")
    return tmp_path / "legacy" / "library.yaml"


def _files(out: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(out.rglob("*.mp4"))
    }


def _version(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
        )
    finally:
        conn.close()


def test_fixture_is_schema_one() -> None:
    """The committed fixture is what the old code wrote (guards against a stray rewrite)."""
    assert _version(FIXTURE / "out" / "state.db") == 1


def test_a_v1_state_resumes(legacy: Path, emulator: Emulator) -> None:
    """Done files untouched, the failed job still failed, the pending jobs submitted, and
    nothing else: the old state is migrated (after a backup) and resumed."""
    out = legacy.parent / "out"
    before = _files(out)
    assert len(before) == 3

    ran = run_cli("run", legacy, "--fal-url", emulator.url)
    stats = emulator.stats()

    assert ran.returncode == 1, ran.stderr  # the moderated job stays failed
    assert stats["submits"] == 2, "only the two pending jobs are submitted"
    assert {r["input_sha256"] for r in stats["requests"]} and len(stats["requests"]) == 2
    after = _files(out)
    for name, (data, mtime) in before.items():
        assert after[name] == (data, mtime), f"{name} was touched"
    assert set(after) - set(before) == {"forest/noir.mp4", "forest/sepia.mp4"}
    assert _version(out / "state.db") == SCHEMA_VERSION
    assert _version(out / "state.db.v1.bak") == 1, "the old file was kept aside"

    store = StateStore.open_readonly(out / "state.db")
    assert store is not None
    try:
        states = {(r.clip, r.prompt): r.state for r in store.rows()}
        spend = store.spend()
    finally:
        store.close()
    assert states[("city", "sepia")] is JobState.FAILED
    assert sum(s is JobState.DONE for s in states.values()) == 5
    # 4 paid requests in the old file (the 429 refused one was never billed) + 2 now.
    assert spend.usd == pytest.approx(6 * 0.72)
    assert spend.paid_attempts == 6

    again = run_cli("run", legacy, "--fal-url", emulator.url)
    assert again.returncode == 1 and emulator.stats()["submits"] == 2, "a rerun pays nothing"


def test_status_of_a_v1_state_needs_no_run(legacy: Path) -> None:
    """``status`` on an old state file migrates it (nothing else running) and reads it."""
    shown = run_cli("status", legacy, "--json")
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["total"] == {"pending": 2, "done": 3, "failed": 1}
    assert summary["estimated_spend"] == pytest.approx(4 * 0.72)
    assert _version(legacy.parent / "out" / "state.db") == SCHEMA_VERSION


def test_a_v2_state_gains_superseded_by_and_takes_and_keeps_its_jobs(legacy: Path) -> None:
    """Schema 2 (the rebuilt engine's) migrates through 3 to 4 in place: every job kept as
    it was, none superseded until a plan says so, each a first take without a verdict, a
    backup of the version 2 file beside it."""
    db = legacy.parent / "out" / "state.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        MIGRATIONS[1](conn)  # the fixture brought to schema 2 only, as 0.2 left files
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
        conn.execute("COMMIT")
        before = conn.execute("SELECT key, state, outputs FROM jobs ORDER BY key").fetchall()
    finally:
        conn.close()
    store = StateStore.open(db)
    try:
        rows = store.rows()
        after = sorted((r.key, r.state.value, r.superseded_by) for r in rows)
        takes = {(r.take, r.verdict, r.role) for r in rows}
    finally:
        store.close()
    assert _version(db) == SCHEMA_VERSION == 4
    assert takes == {(1, None, None)}
    assert _version(db.with_name("state.db.v2.bak")) == 2
    assert [(k, s) for k, s, _ in before] == [(k, s) for k, s, _ in after]
    assert all(by is None for _, _, by in after)
