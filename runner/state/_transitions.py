"""Every job transition, each an op for the single writer."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..job import canonical_json
from ._rows import ErrorInfo, OutputFile


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
