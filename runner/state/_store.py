"""Synchronous access to ``state.db``: opening (and migrating) it, reads, and running a
batch of writes for the single writer."""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence, Set
from pathlib import Path
from typing import Any, Literal, NamedTuple

from ..errors import IllegalTransition, StateError, StateLocked
from ._jobstate import STORED_STATES, JobState
from ._lock import DirectoryLock
from ._outputs import OutputReads
from ._rows import BLOCKED_ROW, PENDING_ROW, JobRow, JobTally, Op, ShownRow, Spend, Unfinished
from ._schema import LAST_PLAN, MANIFESTS, MIGRATIONS, SCHEMA, SCHEMA_VERSION, run_script
from ._sql import translate_errors
from ._verdicts import VerdictReads

_UNFINISHED_SQL = JobState.sql_list(JobState.unfinished())
#: Attempts fal may have billed: all but those it refused (``unsent``) and those it
#: removed from its queue before they ran (``cancelled``).
_BILLED = "billing NOT IN ('unsent', 'cancelled')"
#: A never-submitted job's narrow row: most unfinished jobs of a big batch look like this,
#: and share one value instead of one tuple each.
_UNTOUCHED = {
    (JobState.PENDING.value, 0, 0, None, None, None, None, None, None, None): PENDING_ROW,
    (JobState.BLOCKED.value, 0, 0, None, None, None, None, None, None, None): BLOCKED_ROW,
}


class PlanSnapshot(NamedTuple):
    """How a plan's jobs stand in the state file."""

    counts: Counter[str]  # jobs per state; "new" for jobs the table does not hold yet
    unfinished: dict[str, JobState]  # key -> state of each job not yet finished


class StateStore(OutputReads, VerdictReads):
    """Synchronous access to ``state.db``: schema, reads, and the transition statements.

    Reads may come from any process (``status`` while a run goes on: WAL gives readers a
    consistent snapshot). Writes come only from the process that holds the directory
    lock, through :class:`StateWriter`.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    @classmethod
    def open(cls, path: Path) -> StateStore:
        """Open the state file for writing, creating it or migrating an older one.

        The caller holds the directory lock. A damaged file, or one from a newer
        raybatch, is refused with :class:`StateError`.
        """
        with translate_errors():
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                # Created owner-only before SQLite opens it: the state holds request ids and
                # URLs that are nobody else's business.
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = _connect(path, autocommit=True)
            conn.execute("PRAGMA journal_mode = WAL")
            # FULL: an acknowledged transition (an intent, a request id) survives power loss.
            # Group commit keeps the fsync count low enough for this to be cheap.
            conn.execute("PRAGMA synchronous = FULL")
            store = cls(path, conn)
            store._check_integrity()
            store._bring_up_to_date()
            return store

    @classmethod
    def open_readonly(cls, path: Path) -> StateStore | None:
        """The state file opened read-only (``mode=ro``: it can never change the file, nor
        checkpoint a WAL a run is writing), or None when nothing has run there yet.

        A file written by an older raybatch is migrated first when no run holds the
        directory; while one does, it was migrated by that run, or the run is an older
        raybatch's and the file is refused until it ends.
        """
        if not path.exists():
            return None
        store = cls._connect_readonly(path)
        if store is None:
            return None
        version = store._version()
        if version is not None and version < SCHEMA_VERSION:
            store.close()
            lock = DirectoryLock(path.parent)
            try:
                with lock:
                    cls.open(path).close()
            except StateLocked as exc:
                raise StateError(
                    f"{path} was written by an older raybatch that is still running; wait"
                    " for it to finish"
                ) from exc
            store = cls._connect_readonly(path)
        return store

    @classmethod
    def open_beside_runs(cls, path: Path) -> StateStore | None:
        """The state file opened for the writes a person makes beside any run (verdicts,
        notes, rerolls: never a job's state), without the directory lock; None when nothing
        has run there yet. SQLite serialises these writes with a run's own (WAL, and a
        busy timeout), so a review server and a run share the file safely."""
        reader = cls.open_readonly(path)  # migrates an older file first, as it does
        if reader is None:
            return None
        reader.close()
        with translate_errors():
            conn = _connect(path, autocommit=True)
            conn.execute("PRAGMA synchronous = FULL")
        return cls(path, conn)

    @classmethod
    def _connect_readonly(cls, path: Path) -> StateStore | None:
        uri = "file:" + urllib.parse.quote(str(path.absolute())) + "?mode=ro"
        try:
            conn = _connect(uri, uri=True)
        except sqlite3.Error as exc:
            raise StateError(f"cannot read the state file {path}: {exc}") from exc
        store = cls(path, conn)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            if "jobs" not in tables or "meta" not in tables:
                # A run killed between creating the file and its schema: nothing ran yet.
                conn.close()
                return None
            store._refuse_newer(store._version())
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StateError(f"cannot read the state file {path}: {exc}") from exc
        except StateError:
            conn.close()
            raise
        return store

    def _version(self) -> int | None:
        try:
            row = self._conn.execute(
                "SELECT value FROM meta WHERE key = 'schema_version'"
            ).fetchone()
        except sqlite3.OperationalError:
            return None
        return None if row is None else int(row[0])

    def _refuse_newer(self, version: int | None) -> None:
        if version is not None and version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} was written by a newer raybatch (schema {version}); upgrade raybatch"
            )

    def _check_integrity(self) -> None:
        ok = self._conn.execute("PRAGMA quick_check").fetchone()[0]
        if ok != "ok":
            raise StateError(f"{self.path} failed its integrity check: {ok}")

    def _bring_up_to_date(self) -> None:
        version = self._version()
        self._refuse_newer(version)
        has_jobs = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'"
        ).fetchone()
        if version is None and not has_jobs:
            # New: created whole in one transaction, so a run killed meanwhile leaves no
            # half a schema (DDL is transactional in SQLite) for the next open to misread.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._script(SCHEMA)
                self._conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return
        version = version or 1
        if version == SCHEMA_VERSION:
            return
        self._backup(version)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            for step in range(version, SCHEMA_VERSION):
                MIGRATIONS[step](self._conn)
            self._conn.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),)
            )
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _backup(self, version: int) -> None:
        """Copy the file aside before migrating it (WAL included, via SQLite's backup)."""
        target = self.path.with_name(f"{self.path.name}.v{version}.bak")
        os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
        copy = sqlite3.connect(target)
        try:
            self._conn.backup(copy)
        finally:
            copy.close()

    def _script(self, sql: str) -> None:
        run_script(self._conn, sql)

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

    def shown_rows(self, keys: Set[str]) -> dict[str, ShownRow]:
        """What the review page shows of each job of ``keys`` the state knows, by key."""
        with translate_errors():
            cur = self._conn.execute(
                "SELECT key, state, outputs, attempts, request_id, billable_units, error_class,"
                " error, verdict, note, judged_at FROM jobs ORDER BY rowid"
            )
            return {
                key: ShownRow(
                    key, STORED_STATES[state], json.loads(outputs) if outputs else [], *rest
                )
                for key, state, outputs, *rest in cur
                if key in keys
            }

    def row(self, key: str) -> JobRow | None:
        """One job row by key."""
        with translate_errors():
            r = self._conn.execute("SELECT * FROM jobs WHERE key = ?", (key,)).fetchone()
        return JobRow.from_sql(r) if r else None

    def unfinished(self, keys: Sequence[str] | None = None) -> dict[str, Unfinished]:
        """key → what a resumed run needs, for jobs (of ``keys``) not done, failed or
        cancelled.

        Narrow on purpose: at 100k jobs, half done, whole rows cost a resume 2 s.
        """
        only, args = "", tuple[str, ...]()
        if keys is not None:
            only, args = " AND key IN (SELECT value FROM json_each(?))", (json.dumps(keys),)
        with translate_errors():
            cur = self._conn.execute(
                "SELECT key, state, attempts, ambiguous, request_id, status_url, response_url,"
                " cancel_url, CASE state WHEN 'completed' THEN result END, error_class, error"
                f" FROM jobs WHERE state IN ({_UNFINISHED_SQL}){only}",
                args,
            )
            found = {}
            for key, *fields in cur:
                untouched = _UNTOUCHED.get(tuple(fields))
                if untouched is not None:
                    found[key] = untouched
                    continue
                state, attempts, lost, request_id, status, response, cancel, result = fields[:8]
                found[key] = Unfinished(
                    STORED_STATES[state],
                    attempts,
                    lost,
                    request_id,
                    status,
                    response,
                    cancel,
                    json.loads(result) if result else None,
                    *fields[8:],
                )
            return found

    def states(self) -> dict[str, JobState]:
        """A cheap map of key → state, for reconciling a plan with what has happened."""
        with translate_errors():
            cur = self._conn.execute("SELECT key, state FROM jobs")
            return {key: STORED_STATES[state] for key, state in cur}

    def snapshot(self, keys: Sequence[str], identity: str | None) -> PlanSnapshot:
        """How the jobs ``keys`` stand (a plan's, whose identity is ``identity``)."""
        with translate_errors():
            cur = self._conn.execute(
                f"SELECT key, state FROM jobs WHERE state IN ({_UNFINISHED_SQL})"
            )
            unfinished = {key: STORED_STATES[state] for key, state in cur}
            if self.holds_exactly(identity, len(keys)):
                # The table is this plan: SQLite counts the finished jobs.
                counts = Counter[str]()
                for state, count in self._conn.execute(
                    "SELECT state, count(*) FROM jobs GROUP BY state"
                ):
                    counts[state] += count
                return PlanSnapshot(counts, unfinished)
        states = self.states()
        counts = Counter(states.get(key, "new") for key in keys)
        wanted = set(keys)
        return PlanSnapshot(counts, {k: v for k, v in unfinished.items() if k in wanted})

    def requests_in_flight(self) -> dict[str, str]:
        """key → request id, for the unfinished jobs that hold one."""
        with translate_errors():
            cur = self._conn.execute(
                "SELECT key, request_id FROM jobs WHERE request_id IS NOT NULL"
                f" AND state IN ({_UNFINISHED_SQL})"
            )
            return dict(cur.fetchall())

    def tallies(self) -> dict[str, JobTally]:
        """key → the few fields a summary counts, for every job (no JSON parsed)."""
        with translate_errors():
            cur = self._conn.execute(
                "SELECT key, state, ambiguous, billable_units, updated_at FROM jobs"
            )
            return {r[0]: JobTally(STORED_STATES[r[1]], *r[2:]) for r in cur}

    def rows_in(self, states: Sequence[JobState]) -> list[JobRow]:
        """Rows of the jobs in ``states`` (by index: failures among 100k jobs are cheap)."""
        with translate_errors():
            cur = self._conn.execute(
                f"SELECT * FROM jobs WHERE state IN ({JobState.sql_list(tuple(states))})"
                " ORDER BY rowid"
            )
            return [JobRow.from_sql(r, result=False) for r in cur]

    def attempts(self, key: str | None = None) -> list[dict[str, Any]]:
        """Submission attempts (one row per POST raybatch made or meant to make)."""
        sql = "SELECT * FROM attempts"
        args: tuple[str, ...] = ()
        if key is not None:
            sql += " WHERE key = ?"
            args = (key,)
        with translate_errors():
            return [dict(r) for r in self._conn.execute(sql + " ORDER BY intent_at", args)]

    def edges(self) -> list[tuple[str, str]]:
        """Every (child, parent) pair of the job graph."""
        with translate_errors():
            return [tuple(r) for r in self._conn.execute("SELECT child, parent FROM edges")]

    def gated_edges(self) -> set[tuple[str, str]]:
        """The (child, parent) pairs where the child also waits for the parent's approval."""
        with translate_errors():
            cur = self._conn.execute("SELECT child, parent FROM edges WHERE gate = 1")
            return {(child, parent) for child, parent in cur}

    def meta(self, name: str) -> str | None:
        """A value from the meta table."""
        with translate_errors():
            row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def manifests(self) -> dict[str, str]:
        """The manifests run into this directory: resolved path -> name, first run first."""
        value = self.meta(MANIFESTS)
        found: dict[str, str] = json.loads(value) if value else {}
        return found

    def is_last_plan(self, identity: str | None) -> bool:
        """Whether ``identity`` names the plan last added to this file (then adding it
        again would change nothing: rows are never deleted, and no other plan has
        refreshed them since)."""
        return identity is not None and self.meta(LAST_PLAN) == identity

    def holds_exactly(self, identity: str | None, jobs: int) -> bool:
        """Whether the jobs table is exactly the plan named ``identity`` with ``jobs`` jobs:
        it was the last plan added, and no other job is left from earlier plans."""
        if not self.is_last_plan(identity):
            return False
        with translate_errors():
            (count,) = self._conn.execute("SELECT count(*) FROM jobs").fetchone()
        return bool(count == jobs)

    def remaining(self, *, excluding: Iterable[JobState]) -> tuple[int, float]:
        """Jobs in the table whose state is not in ``excluding``, and their estimated USD."""
        skipped = JobState.sql_list(tuple(excluding))
        with translate_errors():
            (jobs, usd) = self._conn.execute(
                f"SELECT count(*), total(estimated_cost) FROM jobs WHERE state NOT IN ({skipped})"
            ).fetchone()
        return int(jobs), float(usd)

    def endpoint_tallies(self) -> list[tuple[str, JobState, int, float, int, float, float]]:
        """(endpoint, state, jobs, estimated cost, ambiguous, billable units, last update)
        per endpoint and state, over every job in the table, counted by SQLite."""
        with translate_errors():
            cur = self._conn.execute(
                "SELECT endpoint, state, count(*), total(estimated_cost), total(ambiguous),"
                " total(billable_units), max(updated_at) FROM jobs GROUP BY endpoint, state"
            )
            return [(r[0], STORED_STATES[r[1]], *r[2:]) for r in cur]

    def spend(self) -> Spend:
        """What fal may have billed for every job in this file, failed, cancelled and
        superseded ones included: the estimated cost of each attempt it accepted or may
        have accepted (none for an attempt fal reported zero billable units for)."""
        with translate_errors():
            usd, units, paid, lost, later = self._conn.execute(
                "SELECT total(CASE WHEN billable_units = 0 THEN 0 ELSE cost END),"
                " total(billable_units), count(*), total(billing = 'ambiguous'),"
                f" total(attempt > 1) FROM attempts WHERE {_BILLED}"
            ).fetchone()
            again = 0
            if later:
                # Paid again = paid attempts beyond each job's first. Only jobs with a later
                # attempt can have any: counting distinct keys over every attempt cost a
                # 100k-job run 60 ms per read.
                (again,) = self._conn.execute(
                    f"SELECT count(*) - count(DISTINCT key) FROM attempts WHERE {_BILLED}"
                    f" AND key IN (SELECT key FROM attempts WHERE attempt > 1 AND {_BILLED})"
                ).fetchone()
        return Spend(round(float(usd), 6), float(units), paid, int(again), int(lost))

    def finished_records(self) -> Iterator[sqlite3.Row]:
        """Whole rows (arguments included) of every done, failed or cancelled job, in
        insertion order, for ``results.jsonl``."""
        with translate_errors():
            yield from self._conn.execute(
                "SELECT * FROM jobs WHERE state IN ('done', 'failed', 'cancelled') ORDER BY rowid"
            )

    def spend_by_endpoint(self) -> dict[str, float]:
        """:meth:`spend`'s USD per endpoint."""
        with translate_errors():
            cur = self._conn.execute(
                "SELECT jobs.endpoint, total(CASE WHEN attempts.billable_units = 0 THEN 0"
                " ELSE attempts.cost END) FROM attempts JOIN jobs ON jobs.key = attempts.key"
                f" WHERE attempts.{_BILLED} GROUP BY jobs.endpoint"
            )
            return {endpoint: round(float(usd), 6) for endpoint, usd in cur}

    def spend_by_job(self) -> dict[str, tuple[float, int]]:
        """key → (:meth:`spend`'s USD of that job, its paid submissions)."""
        with translate_errors():
            cur = self._conn.execute(
                "SELECT key, total(CASE WHEN billable_units = 0 THEN 0 ELSE cost END),"
                f" count(*) FROM attempts WHERE {_BILLED} GROUP BY key"
            )
            return {key: (round(float(usd), 6), paid) for key, usd, paid in cur}

    # -- writes (called by StateWriter) -------------------------------------------------------

    def execute_batch(self, ops: Sequence[Op]) -> list[IllegalTransition | None]:
        """Run ``ops`` in one IMMEDIATE transaction; all or nothing, except that an op
        refused as an illegal transition is undone alone (its entry in the returned list
        is the error; the others' are None)."""
        refused: list[IllegalTransition | None] = []
        with translate_errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for op in ops:
                    self._conn.execute("SAVEPOINT op")
                    try:
                        op(self._conn)
                    except IllegalTransition as exc:
                        self._conn.execute("ROLLBACK TO op")
                        refused.append(exc)
                    else:
                        refused.append(None)
                    self._conn.execute("RELEASE op")
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
        return refused


def _connect(
    target: str | Path, *, uri: bool = False, autocommit: bool = False
) -> sqlite3.Connection:
    """A connection to a state file, set up as every one is: rows by column name, a busy
    timeout (a run, a review server and ``status`` share the file), and a 128 KiB page
    cache instead of SQLite's 2 MiB: a connection touches a few pages per statement and
    the OS already caches the file, while the default held a copy of a 1k-job run's whole
    file (1.9 MB in the writer, 0.7 in the reader; no CPU difference at 1k or 10k jobs)."""
    # autocommit: sqlite3 opens no transaction; the store's own are BEGIN IMMEDIATE.
    level: Literal["DEFERRED"] | None = None if autocommit else "DEFERRED"
    conn = sqlite3.connect(target, isolation_level=level, uri=uri, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA cache_size = -128")
    return conn
