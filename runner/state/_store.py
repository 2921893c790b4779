"""Synchronous access to ``state.db``: opening it, reads, and running a batch of writes."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import DiskError, StateError
from ..job import JobSpec, canonical_json
from ..plan import Plan
from ._rows import NEVER_SUBMITTED, PENDING_ROW, JobRow, JobTally, PlanSnapshot, Unfinished
from ._schema import LAST_PLAN, SCHEMA, SCHEMA_VERSION


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn SQLite and OS failures into the fatal errors the CLI knows how to report."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "disk" in text or "full" in text or "I/O" in text:
            raise DiskError(f"cannot write the state file: {text}") from exc
        raise StateError(f"state file error: {text}") from exc
    except sqlite3.DatabaseError as exc:
        raise StateError(f"the state file is damaged: {exc}") from exc
    except OSError as exc:
        raise DiskError(f"cannot write the state file: {exc.strerror or exc}") from exc


class StateStore:
    """Synchronous access to ``state.db``: schema, reads, and the transition statements.

    Reads may come from any process (``status`` while a run goes on: WAL gives readers a
    consistent snapshot). Writes come only from the run that holds the directory lock,
    through :class:`StateWriter`.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> StateStore:
        """Open (and if asked, create) the state file; refuse a damaged or newer one."""
        if not create and not path.exists():
            raise StateError(f"no state file at {path}: nothing has run here yet")
        with translate_errors():
            path.parent.mkdir(parents=True, exist_ok=True)
            if create and not path.exists():
                # Created owner-only before SQLite opens it: the state holds request ids and
                # URLs that are nobody else's business.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout = 5000")
            if create:
                conn.execute("PRAGMA journal_mode = WAL")
            # FULL: an acknowledged transition (an intent, a request id) survives power loss.
            # Group commit keeps the fsync count low enough for this to be cheap.
            conn.execute("PRAGMA synchronous = FULL")
            store = cls(path, conn)
            if create:
                store._ensure_schema()
            store._check()
            return store

    def _ensure_schema(self) -> None:
        # Idempotent: a kill between connect and CREATE TABLE leaves an empty file behind.
        self._conn.executescript(SCHEMA)
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            self._conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )

    def _check(self) -> None:
        ok = self._conn.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise StateError(f"{self.path} failed its integrity check: {ok}")
        try:
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.OperationalError:
            row = None
        if row is not None and int(row[0]) > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} was written by a newer raybatch (schema {row[0]}); upgrade raybatch"
            )

    def close(self) -> None:
        """Close the connection (checkpointing the WAL when this is the last one)."""
        self._conn.close()

    # -- reads -----------------------------------------------------------------------------

    def rows(self, keys: Iterable[str] | None = None, *, results: bool = True) -> list[JobRow]:
        """Every job row, or those with the given keys, in insertion order (``results=False``
        leaves each row's result JSON unparsed, as None)."""
        with translate_errors():
            cur = self._conn.execute("SELECT * FROM jobs ORDER BY rowid")
            if keys is None:
                return [JobRow.from_sql(r, result=results) for r in cur]
            wanted = set(keys)
            return [JobRow.from_sql(r, result=results) for r in cur if r["key"] in wanted]

    def row(self, key: str) -> JobRow | None:
        """One job row by key."""
        r = self._conn.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        return JobRow.from_sql(r) if r else None

    def unfinished(self) -> dict[str, Unfinished]:
        """key → what a resumed run needs, for jobs not done, failed or cancelled.

        Narrow on purpose: at 100k jobs, half done, whole rows cost a resume 2 s.
        """
        with translate_errors():
            cur = self._conn.execute(
                "SELECT key, state, attempts, ambiguous, request_id, status_url, response_url,"
                " cancel_url, CASE state WHEN 'completed' THEN result END, error FROM jobs"
                " WHERE state IN ('pending', 'submitting', 'queued', 'running', 'completed')"
            )
            found = {}
            for key, *fields in cur:
                if fields == NEVER_SUBMITTED:
                    # Most unfinished jobs of a big batch: one shared value, no parsing.
                    found[key] = PENDING_ROW
                    continue
                state, attempts, lost, request_id, status, response, cancel, result, error = fields
                parsed = json.loads(result) if result else None
                found[key] = Unfinished(
                    state, attempts, lost, request_id, status, response, cancel, parsed, error
                )
            return found

    def snapshot(self, plan: Plan, *, paid: Iterable[str]) -> PlanSnapshot:
        """How ``plan``'s jobs stand: counts per state, estimated USD already in ``paid``
        states, and the state of each job not yet finished."""
        paid = frozenset(paid)
        with translate_errors():
            cur = self._conn.execute(
                "SELECT key, state FROM jobs"
                " WHERE state IN ('pending', 'submitting', 'queued', 'running', 'completed')"
            )
            unfinished = dict(cur.fetchall())
        columns = plan.columns
        if self.holds_exactly(plan.fingerprint, len(plan)):
            # The table is this plan: SQLite counts the finished jobs.
            counts = Counter[str]()
            spent = 0.0
            for _endpoint, state, count, usd, *_ in self.endpoint_tallies():
                counts[state] += count
                spent += usd if state in paid else 0.0
            return PlanSnapshot(counts, spent, unfinished)
        states = self.states()
        counts = Counter(states.get(key, "new") for key in columns.keys)
        spent = sum(
            cost or 0.0
            for key, cost in zip(columns.keys, columns.costs, strict=True)
            if states.get(key) in paid
        )
        wanted = set(columns.keys)
        return PlanSnapshot(counts, spent, {k: v for k, v in unfinished.items() if k in wanted})

    def requests_in_flight(self) -> dict[str, str]:
        """key → request id, for the jobs not finished that hold one."""
        with translate_errors():
            cur = self._conn.execute(
                "SELECT key, request_id FROM jobs WHERE request_id IS NOT NULL"
                " AND state IN ('submitting', 'queued', 'running', 'completed')"
            )
            return dict(cur.fetchall())

    def tallies(self) -> dict[str, JobTally]:
        """key → the few fields a summary counts, for every job (no JSON parsed)."""
        with translate_errors():
            cur = self._conn.execute(
                "SELECT key, state, ambiguous, billable_units, updated_at FROM jobs"
            )
            return {r[0]: JobTally(*r[1:]) for r in cur}

    def rows_in(self, states: Sequence[str]) -> list[JobRow]:
        """Rows of the jobs in ``states`` (by index: failures among 100k jobs are cheap)."""
        marks = ", ".join("?" * len(states))
        with translate_errors():
            cur = self._conn.execute(
                f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY rowid", tuple(states)
            )
            return [JobRow.from_sql(r, result=False) for r in cur]

    def states(self) -> dict[str, str]:
        """A cheap map of key → state, for reconciling a plan with what has happened."""
        return dict(self._conn.execute("SELECT key, state FROM jobs").fetchall())

    def arguments(self, key: str) -> dict[str, Any]:
        """The canonical arguments recorded for a job."""
        (text,) = self._conn.execute("SELECT arguments FROM jobs WHERE key = ?", (key,)).fetchone()
        result: dict[str, Any] = json.loads(text)
        return result

    def attempts(self, key: str | None = None) -> list[dict[str, Any]]:
        """Submission attempts (one row per POST raybatch made or meant to make)."""
        sql = "SELECT * FROM attempts"
        args: tuple[str, ...] = ()
        if key is not None:
            sql += " WHERE key = ?"
            args = (key,)
        return [dict(r) for r in self._conn.execute(sql + " ORDER BY intent_at", args)]

    def meta(self, name: str) -> str | None:
        """A value from the meta table."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    # -- writes (called by StateWriter inside its transaction) ------------------------------

    def execute_batch(self, ops: Sequence[Callable[[sqlite3.Connection], None]]) -> None:
        """Run ``ops`` in one IMMEDIATE transaction; all or nothing."""
        with translate_errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for op in ops:
                    op(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def add_plan(self, plan: Plan) -> None:
        """``add_jobs`` for a whole plan, recorded as the last plan added; nothing to do when
        it already is (rows are never deleted, and no other plan has refreshed them since)."""
        if plan.fingerprint is not None and self.meta(LAST_PLAN) == plan.fingerprint:
            return
        self.add_jobs(plan.jobs, plan=plan.fingerprint)

    def add_jobs(self, specs: Iterable[JobSpec], *, plan: str | None = None) -> None:
        """Insert jobs not yet known, and refresh labels and output paths of known ones;
        ``plan`` (a plan's fingerprint, or None) becomes the last plan added."""
        now = time.time()
        rows = [
            (
                s.key,
                s.endpoint,
                s.clip,
                s.prompt,
                str(s.output),
                canonical_json(s.arguments),
                s.estimated_cost,
                now,
                now,
            )
            for s in specs
        ]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO jobs (key, endpoint, clip, prompt, output, arguments,"
                " estimated_cost, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET clip = excluded.clip,"
                " prompt = excluded.prompt, output = excluded.output,"
                " estimated_cost = excluded.estimated_cost"
                " WHERE jobs.clip IS NOT excluded.clip OR jobs.prompt IS NOT excluded.prompt"
                " OR jobs.output != excluded.output"
                " OR jobs.estimated_cost IS NOT excluded.estimated_cost",
                rows,
            )
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (LAST_PLAN, plan or ""))

        self.execute_batch([op])

    def holds_exactly(self, plan: str | None, jobs: int) -> bool:
        """Whether the jobs table is exactly the plan named ``plan`` with ``jobs`` jobs: it
        was the last plan added, and no other job is left from earlier plans."""
        if plan is None or self.meta(LAST_PLAN) != plan:
            return False
        with translate_errors():
            (count,) = self._conn.execute("SELECT count(*) FROM jobs").fetchone()
        return bool(count == jobs)

    def estimated_cost(self, *, excluding: Iterable[str]) -> float:
        """Estimated USD of every job in the table whose state is not in ``excluding``."""
        skipped = tuple(excluding)
        marks = ", ".join("?" * len(skipped))
        with translate_errors():
            (usd,) = self._conn.execute(
                f"SELECT total(estimated_cost) FROM jobs WHERE state NOT IN ({marks})", skipped
            ).fetchone()
        return float(usd)

    def endpoint_tallies(self) -> list[tuple[str, str, int, float, int, float, float]]:
        """(endpoint, state, jobs, estimated cost, ambiguous, billable units, last update)
        per endpoint and state, over every job in the table, counted by SQLite."""
        with translate_errors():
            cur = self._conn.execute(
                "SELECT endpoint, state, count(*), total(estimated_cost), total(ambiguous),"
                " total(billable_units), max(updated_at) FROM jobs GROUP BY endpoint, state"
            )
            return [tuple(r) for r in cur]

    def set_meta(self, name: str, value: str) -> None:
        """Set a meta value (its own transaction)."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

        self.execute_batch([op])
