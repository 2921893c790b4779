"""The state file: one SQLite database (WAL) beside the outputs, and its only writer.

Every transition of every job is written here before the rest of the program acts on
it. Two orderings carry the whole crash-safety argument:

* the submit *intent* is committed before the POST and the ``request_id`` right after
  it, so a restart re-attaches to requests instead of paying for them again, and a job
  found in ``submitting`` is known to be *ambiguous* (the POST may or may not have
  reached fal);
* ``done`` is committed only after every output file is verified and renamed into
  place (see ``download.py``), so ``done`` never names a file that is not there.

Writes go through :class:`StateWriter`, which batches whatever transitions are waiting
into one transaction (group commit) and acknowledges each only after its commit: at
100 transitions per commit SQLite does ~80k/s here, against ~4k/s one by one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

import anyio
from anyio.abc import TaskStatus

from .errors import DiskError, StateError, StateLocked
from .job import JobSpec, canonical_json
from .plans import Plan

SCHEMA_VERSION = 1
_LAST_PLAN = "last_plan"  # meta key: fingerprint of the plan add_jobs last wrote

JobState = Literal[
    "pending", "submitting", "queued", "running", "completed", "done", "failed", "cancelled"
]
#: States in which a request exists (or may exist) at fal.
IN_FLIGHT: frozenset[str] = frozenset({"submitting", "queued", "running"})
TERMINAL: frozenset[str] = frozenset({"done", "failed", "cancelled"})
# Queries name the unfinished states with IN, never NOT IN (TERMINAL): only IN lets SQLite
# use the state index instead of reading every row.

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    clip TEXT,
    prompt TEXT,
    output TEXT NOT NULL,
    arguments TEXT NOT NULL,
    estimated_cost REAL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    ambiguous INTEGER NOT NULL DEFAULT 0,
    request_id TEXT,
    status_url TEXT,
    response_url TEXT,
    cancel_url TEXT,
    result TEXT,
    billable_units REAL,
    outputs TEXT,
    error_kind TEXT,
    error_class TEXT,
    error_type TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    submitted_at REAL,
    started_at REAL,
    completed_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
CREATE TABLE IF NOT EXISTS attempts (
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    request_id TEXT,
    intent_at REAL NOT NULL,
    submitted_at REAL,
    ended_at REAL,
    outcome TEXT,
    PRIMARY KEY (key, attempt)
);
"""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One verified output file, as recorded when its job is done."""

    path: str
    sha256: str
    size: int
    url: str
    field: str

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in the state and in ``results.jsonl``."""
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "url": self.url,
            "field": self.field,
        }


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as the state file knows it."""

    key: str
    endpoint: str
    clip: str | None
    prompt: str | None
    output: str
    state: str
    attempts: int
    ambiguous: int
    request_id: str | None
    status_url: str | None
    response_url: str | None
    cancel_url: str | None
    result: dict[str, Any] | None
    billable_units: float | None
    outputs: list[dict[str, Any]]
    estimated_cost: float | None
    error_kind: str | None
    error_class: str | None
    error_type: str | None
    error: str | None
    created_at: float
    submitted_at: float | None
    started_at: float | None
    completed_at: float | None
    finished_at: float | None
    updated_at: float

    @classmethod
    def from_sql(cls, row: sqlite3.Row, *, result: bool = True) -> JobRow:
        """Build a row object from a ``SELECT *`` row (without the result JSON if not
        ``result``: parsing it dominates reading many rows, and displays never use it)."""
        data = dict(row)
        data.pop("arguments", None)
        data["result"] = json.loads(data["result"]) if result and data["result"] else None
        data["outputs"] = json.loads(data["outputs"]) if data["outputs"] else []
        return cls(**data)


class PlanSnapshot(NamedTuple):
    """How a plan's jobs stand in the state file (see ``StateStore.snapshot``)."""

    counts: Counter[str]  # jobs per state; "new" for jobs the table does not hold yet
    paid: float  # estimated USD of the jobs in the states asked about
    unfinished: dict[str, str]  # key -> state of each job not done, failed or cancelled


class Unfinished(NamedTuple):
    """What a resumed run reads of a job it has yet to finish."""

    state: str
    attempts: int
    ambiguous: int
    request_id: str | None
    status_url: str | None
    response_url: str | None
    cancel_url: str | None
    result: dict[str, Any] | None  # only once completed: the result to download
    error: str | None


_PENDING = Unfinished("pending", 0, 0, None, None, None, None, None, None)
_NEVER_SUBMITTED = list(_PENDING)


class JobTally(NamedTuple):
    """What ``status`` counts of a job."""

    state: str
    ambiguous: int
    billable_units: float | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What the state keeps of a failure."""

    kind: str
    cls: str
    message: str
    error_type: str | None = None

    @classmethod
    def of(cls, exc: BaseException) -> ErrorInfo:
        """Describe an exception (classified errors keep their kind and error_type)."""
        return cls(
            kind=str(getattr(exc, "kind", "fatal")),
            cls=type(exc).__name__,
            message=str(exc) or type(exc).__name__,
            error_type=getattr(exc, "error_type", None),
        )


@contextlib.contextmanager
def _translate_errors() -> Iterator[None]:
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
        with _translate_errors():
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
        self._conn.executescript(_SCHEMA)
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
        with _translate_errors():
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
        with _translate_errors():
            cur = self._conn.execute(
                "SELECT key, state, attempts, ambiguous, request_id, status_url, response_url,"
                " cancel_url, CASE state WHEN 'completed' THEN result END, error FROM jobs"
                " WHERE state IN ('pending', 'submitting', 'queued', 'running', 'completed')"
            )
            found = {}
            for key, *fields in cur:
                if fields == _NEVER_SUBMITTED:
                    # Most unfinished jobs of a big batch: one shared value, no parsing.
                    found[key] = _PENDING
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
        with _translate_errors():
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
        with _translate_errors():
            cur = self._conn.execute(
                "SELECT key, request_id FROM jobs WHERE request_id IS NOT NULL"
                " AND state IN ('submitting', 'queued', 'running', 'completed')"
            )
            return dict(cur.fetchall())

    def tallies(self) -> dict[str, JobTally]:
        """key → the few fields a summary counts, for every job (no JSON parsed)."""
        with _translate_errors():
            cur = self._conn.execute(
                "SELECT key, state, ambiguous, billable_units, updated_at FROM jobs"
            )
            return {r[0]: JobTally(*r[1:]) for r in cur}

    def rows_in(self, states: Sequence[str]) -> list[JobRow]:
        """Rows of the jobs in ``states`` (by index: failures among 100k jobs are cheap)."""
        marks = ", ".join("?" * len(states))
        with _translate_errors():
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
        with _translate_errors():
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
        if plan.fingerprint is not None and self.meta(_LAST_PLAN) == plan.fingerprint:
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
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_LAST_PLAN, plan or ""))

        self.execute_batch([op])

    def holds_exactly(self, plan: str | None, jobs: int) -> bool:
        """Whether the jobs table is exactly the plan named ``plan`` with ``jobs`` jobs: it
        was the last plan added, and no other job is left from earlier plans."""
        if plan is None or self.meta(_LAST_PLAN) != plan:
            return False
        with _translate_errors():
            (count,) = self._conn.execute("SELECT count(*) FROM jobs").fetchone()
        return bool(count == jobs)

    def estimated_cost(self, *, excluding: Iterable[str]) -> float:
        """Estimated USD of every job in the table whose state is not in ``excluding``."""
        skipped = tuple(excluding)
        marks = ", ".join("?" * len(skipped))
        with _translate_errors():
            (usd,) = self._conn.execute(
                f"SELECT total(estimated_cost) FROM jobs WHERE state NOT IN ({marks})", skipped
            ).fetchone()
        return float(usd)

    def endpoint_tallies(self) -> list[tuple[str, str, int, float, int, float, float]]:
        """(endpoint, state, jobs, estimated cost, ambiguous, billable units, last update)
        per endpoint and state, over every job in the table, counted by SQLite."""
        with _translate_errors():
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


def _update(key: str, **fields: Any) -> Callable[[sqlite3.Connection], None]:
    """An UPDATE of one job row, stamping ``updated_at``."""
    fields["updated_at"] = time.time()
    names = ", ".join(f"{k} = ?" for k in fields)
    values = [*fields.values(), key]

    def op(conn: sqlite3.Connection) -> None:
        conn.execute(f"UPDATE jobs SET {names} WHERE key = ?", values)

    return op


class Transitions:
    """Builders for every job transition: each returns an op for :class:`StateWriter`.

    Kept in one place so the legal transitions can be read (and tested) as a list.
    """

    @staticmethod
    def intent(key: str, attempt: int) -> Callable[[sqlite3.Connection], None]:
        """About to POST attempt ``attempt``: from here until ``submitted`` it is ambiguous."""
        now = time.time()
        set_row = _update(key, state="submitting", attempts=attempt)

        def op(conn: sqlite3.Connection) -> None:
            set_row(conn)
            conn.execute(
                "INSERT OR REPLACE INTO attempts (key, attempt, intent_at) VALUES (?, ?, ?)",
                (key, attempt, now),
            )

        return op

    @staticmethod
    def unsent(key: str) -> Callable[[sqlite3.Connection], None]:
        """fal definitely refused the POST (429, 5xx, connect error): nothing exists there."""
        return _update(key, state="pending")

    @staticmethod
    def submitted(
        key: str,
        attempt: int,
        request_id: str,
        status_url: str,
        response_url: str,
        cancel_url: str,
    ) -> Callable[[sqlite3.Connection], None]:
        """fal accepted the POST: remember the request so no restart submits it again."""
        now = time.time()
        set_row = _update(
            key,
            state="queued",
            request_id=request_id,
            status_url=status_url,
            response_url=response_url,
            cancel_url=cancel_url,
            submitted_at=now,
        )

        def op(conn: sqlite3.Connection) -> None:
            set_row(conn)
            conn.execute(
                "UPDATE attempts SET request_id = ?, submitted_at = ?"
                " WHERE key = ? AND attempt = ?",
                (request_id, now, key, attempt),
            )

        return op

    @staticmethod
    def running(key: str) -> Callable[[sqlite3.Connection], None]:
        """fal reports the request IN_PROGRESS."""
        return _update(key, state="running", started_at=time.time())

    @staticmethod
    def queued_again(key: str) -> Callable[[sqlite3.Connection], None]:
        """fal moved a running request back to its queue (a server-side retry)."""
        return _update(key, state="queued")

    @staticmethod
    def completed(
        key: str, result: dict[str, Any], billable_units: float | None
    ) -> Callable[[sqlite3.Connection], None]:
        """The result is fetched and kept, so downloads survive its expiry at fal."""
        now = time.time()
        set_row = _update(
            key,
            state="completed",
            result=canonical_json(result),
            billable_units=billable_units,
            completed_at=now,
        )

        def op(conn: sqlite3.Connection) -> None:
            set_row(conn)
            conn.execute(
                "UPDATE attempts SET ended_at = ?, outcome = 'completed'"
                " WHERE key = ? AND attempt = (SELECT attempts FROM jobs WHERE key = ?)",
                (now, key, key),
            )

        return op

    @staticmethod
    def done(key: str, outputs: Sequence[OutputFile]) -> Callable[[sqlite3.Connection], None]:
        """Every output is verified and in place under its final name."""
        return _update(
            key,
            state="done",
            outputs=json.dumps([o.to_json() for o in outputs]),
            finished_at=time.time(),
            error_kind=None,
            error_class=None,
            error_type=None,
            error=None,
        )

    @staticmethod
    def retry(
        key: str, error: ErrorInfo, *, resubmit: bool
    ) -> Callable[[sqlite3.Connection], None]:
        """Record a retryable failure; with ``resubmit`` the request is dropped for a new one."""
        fields: dict[str, Any] = {
            "error_kind": error.kind,
            "error_class": error.cls,
            "error_type": error.error_type,
            "error": error.message,
        }
        if resubmit:
            fields |= {
                "state": "pending",
                "request_id": None,
                "status_url": None,
                "response_url": None,
                "cancel_url": None,
                "result": None,
            }
        set_row = _update(key, **fields)
        now = time.time()

        def op(conn: sqlite3.Connection) -> None:
            set_row(conn)
            if resubmit:
                conn.execute(
                    "UPDATE attempts SET ended_at = ?, outcome = ?"
                    " WHERE key = ? AND attempt = (SELECT attempts FROM jobs WHERE key = ?)",
                    (now, f"retry: {error.cls}", key, key),
                )

        return op

    @staticmethod
    def ambiguous(key: str, *, resubmit: bool) -> Callable[[sqlite3.Connection], None]:
        """A POST whose outcome is unknown: count it, then resubmit or fail per policy."""
        state = "pending" if resubmit else "failed"
        message = (
            "the submit may have reached fal but its answer was lost; resubmitted"
            if resubmit
            else "the submit may have reached fal but its answer was lost; not resubmitted"
            " (--on-ambiguous fail). Check fal's dashboard, then rerun with --retry-failed"
        )
        set_row = _update(
            key,
            state=state,
            error_kind="ambiguous",
            error_class="SubmitUnconfirmed",
            error=message,
            error_type=None,
        )

        def op(conn: sqlite3.Connection) -> None:
            set_row(conn)
            conn.execute("UPDATE jobs SET ambiguous = ambiguous + 1 WHERE key = ?", (key,))
            conn.execute(
                "UPDATE attempts SET outcome = 'ambiguous'"
                " WHERE key = ? AND attempt = (SELECT attempts FROM jobs WHERE key = ?)",
                (key, key),
            )

        return op

    @staticmethod
    def failed(key: str, error: ErrorInfo) -> Callable[[sqlite3.Connection], None]:
        """The job cannot succeed; keep why."""
        return _update(
            key,
            state="failed",
            error_kind=error.kind,
            error_class=error.cls,
            error_type=error.error_type,
            error=error.message,
            finished_at=time.time(),
        )

    @staticmethod
    def cancelled(key: str, note: str) -> Callable[[sqlite3.Connection], None]:
        """The user cancelled the job (remotely too, as far as fal allows)."""
        return _update(
            key,
            state="cancelled",
            error_kind="cancelled",
            error_class="Cancelled",
            error=note,
            finished_at=time.time(),
        )

    @staticmethod
    def reset(key: str) -> Callable[[sqlite3.Connection], None]:
        """Give a failed or cancelled job another go (``--retry-failed``).

        A job whose result was already fetched goes back to ``completed`` (download again,
        pay nothing); any other goes back to ``pending``.
        """

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE jobs SET state = CASE WHEN result IS NULL THEN 'pending'"
                " ELSE 'completed' END, request_id = CASE WHEN result IS NULL THEN NULL"
                " ELSE request_id END, finished_at = NULL, updated_at = ? WHERE key = ?",
                (time.time(), key),
            )

        return op


class StateWriter:
    """The single writer: group-commits queued transitions from many tasks.

    ``await writer.apply(op)`` returns once ``op`` is committed, so callers may act on
    it (for instance POST after the intent is durable). Commits run in a worker thread
    so the event loop never waits on fsync.
    """

    def __init__(self, store: StateStore, *, max_batch: int = 500) -> None:
        self._store = store
        self._max_batch = max_batch
        send, receive = anyio.create_memory_object_stream[
            tuple[Callable[[sqlite3.Connection], None], _Waiter]
        ](math.inf)
        self._send = send
        self._receive = receive
        self._failure: BaseException | None = None

    async def apply(self, *ops: Callable[[sqlite3.Connection], None]) -> None:
        """Commit ``ops`` (in one transaction with whatever else is waiting)."""
        if self._failure is not None:
            raise self._failure
        waiter = _Waiter()
        for op in ops[:-1]:
            self._send.send_nowait((op, _Waiter()))
        self._send.send_nowait((ops[-1], waiter))
        await waiter.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve commits until :meth:`close`; a failed commit fails every waiter with it
        (this task itself never raises: the callers decide what a failure means)."""
        task_status.started()
        with self._send, self._receive:
            async for first in self._receive:
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                if self._failure is None:
                    try:
                        # Shielded by default (to_thread): a cancelled run still finishes
                        # the commit it started, so no acknowledged write is half-done.
                        await anyio.to_thread.run_sync(
                            self._store.execute_batch, [op for op, _ in batch]
                        )
                    except Exception as exc:  # handed to every waiter below
                        self._failure = exc
                if self._failure is not None:
                    # After one failed commit nothing more is written: every waiter, now
                    # and later, gets that error (a DiskError stops the run as fatal).
                    for _, waiter in batch:
                        waiter.fail(self._failure)
                    continue
                for _, waiter in batch:
                    waiter.done()

    def close(self) -> None:
        """No more writes: ``run`` returns after committing what is queued."""
        self._send.close()


class _Waiter:
    """A one-shot acknowledgement: committed, or failed with an exception."""

    __slots__ = ("_error", "_event")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._error: BaseException | None = None

    def done(self) -> None:
        self._event.set()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        if self._error is not None:
            raise self._error


class DirectoryLock:
    """An exclusive lock on an output directory, so two runs never share a state file.

    ``flock`` is released by the kernel when the process dies, so a SIGKILLed run never
    leaves a stale lock behind.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".raybatch.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StateLocked` naming the holder."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise DiskError(f"cannot create {self.path}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise StateLocked(
                f"{self.path.parent} is in use by another raybatch run (pid {holder});"
                " wait for it to finish or stop it first"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError as exc:
            os.close(fd)
            raise DiskError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self._fd = fd

    def release(self) -> None:
        """Give the lock back."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def write_results(store: StateStore, path: Path, keys: Sequence[str] | None = None) -> int:
    """Rewrite ``results.jsonl`` atomically: one line per finished job; returns the count."""
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with _translate_errors():
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                wanted = None if keys is None else set(keys)
                cur = store._conn.execute(
                    "SELECT * FROM jobs WHERE state IN ('done', 'failed', 'cancelled')"
                    " ORDER BY rowid"
                )
                for r in cur:
                    if wanted is not None and r["key"] not in wanted:
                        continue
                    out.write(canonical_json(result_record(r)) + "\n")
                    count += 1
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # no half-written results.jsonl.tmp left behind
            raise DiskError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return count


def result_record(r: sqlite3.Row) -> dict[str, Any]:
    """One ``results.jsonl`` line for a finished job."""
    timings = {
        "submitted_at": r["submitted_at"],
        "started_at": r["started_at"],
        "completed_at": r["completed_at"],
        "finished_at": r["finished_at"],
    }
    return {
        "key": r["key"],
        "status": r["state"],
        "endpoint": r["endpoint"],
        "clip": r["clip"],
        "prompt": r["prompt"],
        "request_id": r["request_id"],
        "inputs": json.loads(r["arguments"]),
        "outputs": json.loads(r["outputs"]) if r["outputs"] else [],
        "billable_units": r["billable_units"],
        "estimated_cost": r["estimated_cost"],
        "attempts": r["attempts"],
        "ambiguous_submits": r["ambiguous"],
        "timings": timings,
        "error": None
        if r["error"] is None or r["state"] == "done"
        else {"class": r["error_class"], "type": r["error_type"], "message": r["error"]},
    }
