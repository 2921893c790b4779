"""Every job transition, each an op for the single writer, each guarded in SQL.

A transition names the states it may start from: its ``UPDATE … WHERE key = ? AND state
IN (…)`` changes nothing from any other, and then the op raises
:class:`IllegalTransition` (the writer fails only that op; the rest of its batch
commits). Unblocking also checks, in the same statement, that every parent is done.

Attempts: each POST raybatch makes or means to make is a row of ``attempts``, numbered
per job, with its ``billing``: ``pending`` from the intent until fal answers (unknowable
after a crash), ``unsent`` when fal definitely refused it (never billed), ``accepted``
with a request id, ``ambiguous`` when the answer was lost. Spend is the sum over every
attempt not ``unsent``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import IllegalTransition
from ..job import JobSpec, canonical_json
from ._jobstate import JobState
from ._rows import ErrorInfo, OutputFile
from ._schema import LAST_PLAN, MANIFESTS

Op = Callable[[sqlite3.Connection], None]

S = JobState
_UNFINISHED = S.unfinished()
_AT_FAL = (S.QUEUED, S.RUNNING)
_HOLDS_REQUEST = (S.QUEUED, S.RUNNING, S.COMPLETED)
_ERROR_CLEARED = {"error_kind": None, "error_class": None, "error_type": None, "error": None}


def _move(
    key: str, frm: Sequence[JobState], to: JobState | None, *, where: str = "", **fields: Any
) -> Op:
    """An UPDATE of one job row from one of ``frm`` (to ``to``, if given; ``where`` adds a
    condition), stamping ``updated_at``; raises IllegalTransition when nothing matched."""
    if to is not None:
        fields["state"] = to.value
    fields["updated_at"] = time.time()
    names = ", ".join(f"{k} = ?" for k in fields)
    allowed = JobState.sql_list(tuple(frm))
    sql = f"UPDATE jobs SET {names} WHERE key = ? AND state IN ({allowed}){where}"
    values = [*fields.values(), key]

    def op(conn: sqlite3.Connection) -> None:
        if conn.execute(sql, values).rowcount != 1:
            _refuse(conn, key, to)

    return op


def _refuse(conn: sqlite3.Connection, key: str, to: JobState | None) -> None:
    row = conn.execute("SELECT state FROM jobs WHERE key = ?", (key,)).fetchone()
    found = "no such job" if row is None else f"it is {row[0]}"
    raise IllegalTransition(f"job {key[:12]} cannot move to {to or 'an update'}: {found}")


def _error_fields(error: ErrorInfo) -> dict[str, Any]:
    return {
        "error_kind": error.kind,
        "error_class": error.cls,
        "error_type": error.error_type,
        "error": error.message,
    }


def _close_attempt(conn: sqlite3.Connection, key: str, outcome: str, **fields: Any) -> None:
    """Close the job's current attempt with ``outcome`` (and set ``fields`` on it)."""
    sets = "".join(f", {name} = :{name}" for name in fields)
    conn.execute(
        f"UPDATE attempts SET ended_at = :now, outcome = :outcome{sets}"
        " WHERE key = :key AND attempt = (SELECT attempts FROM jobs WHERE key = :key)",
        {"now": time.time(), "outcome": outcome, "key": key, **fields},
    )


class Transitions:
    """Builders for every job transition: each returns an op for :class:`StateWriter`.

    Kept in one place so the legal transitions can be read (and tested) as a list.
    """

    # -- the plan ---------------------------------------------------------------------------

    @staticmethod
    def add_plan(specs: Iterable[JobSpec], identity: str | None) -> Op:
        """Insert jobs not yet known (``blocked`` if they have parents, else ``pending``)
        and their edges, refresh labels and output paths of known ones, and record
        ``identity`` as the last plan added."""
        now = time.time()
        rows = []
        edges: list[tuple[str, str]] = []
        for s in specs:
            state = S.BLOCKED if s.parents else S.PENDING
            labels = canonical_json(dict(s.labels)) if s.labels else None
            rows.append(
                (
                    s.key,
                    s.endpoint,
                    s.kind,
                    s.clip,
                    s.prompt,
                    labels,
                    str(s.output),
                    canonical_json(s.arguments),
                    s.estimated_cost,
                    state.value,
                    now,
                    now,
                )
            )
            edges.extend((s.key, parent) for parent in s.parents)

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO jobs (key, endpoint, kind, clip, prompt, labels, output, arguments,"
                " estimated_cost, state, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET clip = excluded.clip,"
                " prompt = excluded.prompt, labels = excluded.labels, output = excluded.output,"
                " estimated_cost = excluded.estimated_cost"
                " WHERE jobs.clip IS NOT excluded.clip OR jobs.prompt IS NOT excluded.prompt"
                " OR jobs.labels IS NOT excluded.labels OR jobs.output != excluded.output"
                " OR jobs.estimated_cost IS NOT excluded.estimated_cost",
                rows,
            )
            conn.executemany("INSERT OR IGNORE INTO edges (child, parent) VALUES (?, ?)", edges)
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (LAST_PLAN, identity or ""))

        return op

    @staticmethod
    def note_manifest(path: str, name: str) -> Op:
        """Record that the manifest at ``path`` (resolved), named ``name``, runs here."""

        def op(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT value FROM meta WHERE key = ?", (MANIFESTS,)).fetchone()
            known: dict[str, str] = json.loads(row[0]) if row else {}
            if known.get(path) != name:
                known[path] = name
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)", (MANIFESTS, json.dumps(known))
                )

        return op

    # -- the graph --------------------------------------------------------------------------

    @staticmethod
    def unblock(key: str) -> Op:
        """Every parent is done: the job may run (the statement itself checks the parents)."""
        now = time.time()

        def op(conn: sqlite3.Connection) -> None:
            changed = conn.execute(
                "UPDATE jobs SET state = 'pending', updated_at = ? WHERE key = ?"
                " AND state = 'blocked' AND NOT EXISTS (SELECT 1 FROM edges"
                " JOIN jobs AS parent ON parent.key = edges.parent"
                " WHERE edges.child = ? AND parent.state != 'done')",
                (now, key, key),
            ).rowcount
            if changed != 1:
                _refuse(conn, key, S.PENDING)

        return op

    @staticmethod
    def blocked_by(key: str, label: str) -> Op:
        """A parent failed: the job fails too, naming it; ``--retry-failed`` unblocks it."""
        error = ErrorInfo("blocked", "Blocked", f"blocked by {label}, which failed")
        return _move(
            key, (S.BLOCKED, S.PENDING), S.FAILED, finished_at=time.time(), **_error_fields(error)
        )

    # -- a remote request ---------------------------------------------------------------------

    @staticmethod
    def intent(key: str, attempt: int, cost: float | None) -> Op:
        """About to POST attempt ``attempt``: from here until fal answers it is ambiguous."""
        now = time.time()
        move = _move(key, (S.PENDING,), S.SUBMITTING, attempts=attempt)

        def op(conn: sqlite3.Connection) -> None:
            move(conn)
            conn.execute(
                "INSERT OR REPLACE INTO attempts (key, attempt, intent_at, billing, cost)"
                " VALUES (?, ?, ?, 'pending', ?)",
                (key, attempt, now, cost),
            )

        return op

    @staticmethod
    def unsent(key: str) -> Op:
        """fal definitely refused the POST (429, 503, connect error): nothing exists there,
        nothing is billed, and the attempt's number is free for the next POST."""
        move = _move(key, (S.SUBMITTING,), S.PENDING)

        def op(conn: sqlite3.Connection) -> None:
            move(conn)
            _close_attempt(conn, key, "refused", billing="unsent")
            conn.execute("UPDATE jobs SET attempts = attempts - 1 WHERE key = ?", (key,))

        return op

    @staticmethod
    def submitted(
        key: str, request_id: str, status_url: str, response_url: str, cancel_url: str
    ) -> Op:
        """fal accepted the POST: remember the request so no restart submits it again."""
        now = time.time()
        move = _move(
            key,
            (S.SUBMITTING,),
            S.QUEUED,
            request_id=request_id,
            status_url=status_url,
            response_url=response_url,
            cancel_url=cancel_url,
            submitted_at=now,
        )

        def op(conn: sqlite3.Connection) -> None:
            move(conn)
            conn.execute(
                "UPDATE attempts SET request_id = ?, submitted_at = ?, billing = 'accepted'"
                " WHERE key = ? AND attempt = (SELECT attempts FROM jobs WHERE key = ?)",
                (request_id, now, key, key),
            )

        return op

    @staticmethod
    def ambiguous(key: str, *, resubmit: bool) -> Op:
        """A POST whose outcome is unknown: count it (as paid), then resubmit or fail."""
        message = (
            "the submit may have reached fal but its answer was lost; resubmitted"
            if resubmit
            else "the submit may have reached fal but its answer was lost; not resubmitted"
            " (--on-ambiguous fail). Check fal's dashboard, then rerun with --retry-failed"
        )
        error = ErrorInfo("ambiguous", "SubmitUnconfirmed", message)
        to = S.PENDING if resubmit else S.FAILED
        extra: dict[str, Any] = {} if resubmit else {"finished_at": time.time()}
        move = _move(key, (S.SUBMITTING,), to, **_error_fields(error), **extra)

        def op(conn: sqlite3.Connection) -> None:
            move(conn)
            conn.execute("UPDATE jobs SET ambiguous = ambiguous + 1 WHERE key = ?", (key,))
            _close_attempt(conn, key, "ambiguous", billing="ambiguous")

        return op

    @staticmethod
    def running(key: str) -> Op:
        """fal reports the request IN_PROGRESS."""
        return _move(key, (S.QUEUED,), S.RUNNING, started_at=time.time())

    @staticmethod
    def queued_again(key: str) -> Op:
        """fal moved a running request back to its queue (a server-side retry)."""
        return _move(key, (S.RUNNING,), S.QUEUED)

    @staticmethod
    def completed(key: str, result: dict[str, Any], billable_units: float | None) -> Op:
        """The result is fetched and kept, so downloads survive its expiry at fal."""
        now = time.time()
        move = _move(
            key,
            _AT_FAL,
            S.COMPLETED,
            result=canonical_json(result),
            billable_units=billable_units,
            completed_at=now,
        )

        def op(conn: sqlite3.Connection) -> None:
            move(conn)
            _close_attempt(conn, key, "completed", billable_units=billable_units)

        return op

    @staticmethod
    def resubmit(key: str, error: ErrorInfo) -> Op:
        """Drop the job's request (its attempt stays counted) for a new, paid one."""
        move = _move(
            key,
            _HOLDS_REQUEST,
            S.PENDING,
            request_id=None,
            status_url=None,
            response_url=None,
            cancel_url=None,
            result=None,
            **_error_fields(error),
        )

        def op(conn: sqlite3.Connection) -> None:
            move(conn)
            _close_attempt(conn, key, f"resubmitted: {error.cls}")

        return op

    # -- any job ------------------------------------------------------------------------------

    @staticmethod
    def done(key: str, outputs: Sequence[OutputFile]) -> Op:
        """Every output is verified and in place under its final name (a remote job from
        ``completed``, a local step from ``pending``)."""
        return _move(
            key,
            (S.COMPLETED, S.PENDING),
            S.DONE,
            where=" AND (state = 'completed' OR kind = 'local')",
            outputs=json.dumps([o.to_json() for o in outputs]),
            finished_at=time.time(),
            **_ERROR_CLEARED,
        )

    @staticmethod
    def failed(key: str, error: ErrorInfo) -> Op:
        """The job cannot succeed; keep why (and any request and result it holds, so
        ``--retry-failed`` can re-attach or download again instead of paying again)."""
        return _move(key, _UNFINISHED, S.FAILED, finished_at=time.time(), **_error_fields(error))

    @staticmethod
    def cancelled(key: str, note: str) -> Op:
        """The user cancelled the job (remotely too, as far as fal allows)."""
        error = ErrorInfo("cancelled", "Cancelled", note)
        return _move(
            key,
            (S.BLOCKED, S.PENDING, S.QUEUED, S.RUNNING),
            S.CANCELLED,
            finished_at=time.time(),
            **_error_fields(error),
        )

    @staticmethod
    def reset(key: str, to: JobState) -> Op:
        """Give a failed or cancelled job another go (``--retry-failed``), in the state the
        fault-policy table chose: ``completed`` (download again), ``queued`` (re-attach to
        its request), ``blocked`` (wait for parents being retried) or ``pending`` (a new,
        paid request)."""
        if to not in (S.COMPLETED, S.QUEUED, S.BLOCKED, S.PENDING):
            raise IllegalTransition(f"job {key[:12]} cannot be reset to {to}")
        fields: dict[str, Any] = {"finished_at": None}
        if to in (S.PENDING, S.BLOCKED):
            fields |= {"request_id": None, "result": None}
        return _move(key, (S.FAILED, S.CANCELLED), to, **fields)

    @staticmethod
    def outputs_missing(key: str, note: str) -> Op:
        """A done job's files are gone or altered: download them again from its result."""
        error = ErrorInfo("retryable", "OutputMissing", note)
        return _move(key, (S.DONE,), S.COMPLETED, finished_at=None, **_error_fields(error))
