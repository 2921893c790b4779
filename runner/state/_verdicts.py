"""What people decided about outputs: verdicts, notes and rerolls, written through the
single writer like every other change, and read back by runs, pages and summaries.

A verdict (``approved``, ``rejected``, or cleared) is given to a *done* job only: it
judges a file. Its current value is kept on the job row (``jobs.verdict``) for cheap
reads, and every verdict and note given is a row of ``verdicts`` in order, so a run that
waits for verdicts notices new ones by the largest id alone. A reroll asks for one more
take of a rejected job's take group (``job.take_group``); the next plan has it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from ..errors import IllegalTransition
from ._jobstate import JobState
from ._rows import Op

APPROVED = "approved"
REJECTED = "rejected"
#: What a verdict may be; None clears it.
VERDICTS = (APPROVED, REJECTED)
#: A note longer than this is refused (it is a note, not a document).
MAX_NOTE = 4000


class Judgement(NamedTuple):
    """A job's current verdict and note."""

    verdict: str | None
    note: str | None
    judged_at: float | None


class VerdictMark(NamedTuple):
    """Where the verdict log stands: a change in either means something new to read."""

    last_verdict: int
    rerolls: int


class Verdicts:
    """Builders of the ops that record what people decide (for :class:`StateWriter`)."""

    @staticmethod
    def judge(key: str, verdict: str | None, origin: str) -> Op:
        """Approve, reject (``verdict``) or clear (None) a done job's output."""
        if verdict is not None and verdict not in VERDICTS:
            raise ValueError(f"a verdict is one of {', '.join(VERDICTS)} or None")
        now = time.time()

        def op(conn: sqlite3.Connection) -> None:
            changed = conn.execute(
                "UPDATE jobs SET verdict = ?, judged_at = ? WHERE key = ? AND state = ?",
                (verdict, now, key, JobState.DONE.value),
            ).rowcount
            if changed != 1:
                _refuse(conn, key, "be judged: only a done job has an output to judge")
            conn.execute(
                "INSERT INTO verdicts (key, verdict, at, origin) VALUES (?, ?, ?, ?)",
                (key, verdict or "cleared", now, origin),
            )

        return op

    @staticmethod
    def note(key: str, text: str, origin: str) -> Op:
        """Leave a note on a job (an empty text clears it)."""
        if len(text) > MAX_NOTE:
            raise ValueError(f"a note is at most {MAX_NOTE} characters")
        now = time.time()

        def op(conn: sqlite3.Connection) -> None:
            changed = conn.execute(
                "UPDATE jobs SET note = ? WHERE key = ?", (text or None, key)
            ).rowcount
            if changed != 1:
                _refuse(conn, key, "take a note")
            conn.execute(
                "INSERT INTO verdicts (key, verdict, note, at, origin) VALUES (?, NULL, ?, ?, ?)",
                (key, text, now, origin),
            )

        return op

    @staticmethod
    def reroll(from_key: str, group: str, planned: int) -> Op:
        """One more take of ``group`` in place of the rejected job ``from_key``: numbered
        after ``planned`` (the highest take the plan has) and every earlier reroll, in the
        same transaction, so two pages rerolling at once get two takes."""
        now = time.time()

        def op(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT verdict, (SELECT take FROM rerolls WHERE from_key = ?) FROM jobs"
                " WHERE key = ?",
                (from_key, from_key),
            ).fetchone()
            if row is None:
                _refuse(conn, from_key, "be rolled again")
            verdict, already = row
            if already is not None:
                raise IllegalTransition(
                    f"job {from_key[:12]} was already rolled again as take {already}"
                )
            if verdict != REJECTED:
                raise IllegalTransition(
                    f"job {from_key[:12]} is not rejected; only a rejected take is rolled again"
                )
            (last,) = conn.execute(
                "SELECT max(take) FROM rerolls WHERE take_group = ?", (group,)
            ).fetchone()
            conn.execute(
                "INSERT INTO rerolls (from_key, take_group, take, at) VALUES (?, ?, ?, ?)",
                (from_key, group, max(planned, last or 0) + 1, now),
            )

        return op


def _refuse(conn: sqlite3.Connection, key: str, what: str) -> None:
    row = conn.execute("SELECT state FROM jobs WHERE key = ?", (key,)).fetchone()
    found = "no such job" if row is None else f"it is {row[0]}"
    raise IllegalTransition(f"job {key[:12]} cannot {what} ({found})")


class VerdictReads:
    """The reads of verdicts, notes and rerolls (mixed into ``StateStore``)."""

    _conn: sqlite3.Connection

    def judgements(self, keys: Iterable[str] | None = None) -> dict[str, Judgement]:
        """key → current verdict and note, for every job judged or noted (or of ``keys``)."""
        cur = self._conn.execute(
            "SELECT key, verdict, note, judged_at FROM jobs"
            " WHERE verdict IS NOT NULL OR note IS NOT NULL"
        )
        found = {key: Judgement(v, n, at) for key, v, n, at in cur}
        if keys is None:
            return found
        return {key: found[key] for key in keys if key in found}

    def has_judging(self) -> bool:
        """Whether anything here was judged, or waits to be (a gated edge): cheap, so a
        summary of a plain batch does not count verdicts nobody gives."""
        row = self._conn.execute(
            "SELECT EXISTS (SELECT 1 FROM edges WHERE gate = 1) OR EXISTS (SELECT 1 FROM verdicts)"
        ).fetchone()
        return bool(row[0])

    def verdict_mark(self) -> VerdictMark:
        """The newest verdict's id and the number of rerolls (cheap: two index lookups)."""
        row = self._conn.execute(
            "SELECT (SELECT coalesce(max(id), 0) FROM verdicts), (SELECT count(*) FROM rerolls)"
        ).fetchone()
        return VerdictMark(int(row[0]), int(row[1]))

    def verdicts_since(self, last: int) -> list[tuple[int, str, str | None]]:
        """(id, key, verdict or None when cleared) of every verdict after id ``last``."""
        cur = self._conn.execute(
            "SELECT id, key, verdict FROM verdicts WHERE id > ? AND verdict IS NOT NULL"
            " ORDER BY id",
            (last,),
        )
        return [(i, key, None if v == "cleared" else v) for i, key, v in cur]

    def judged_since(self, last: int) -> set[str]:
        """Keys given a verdict or a note after id ``last``."""
        cur = self._conn.execute("SELECT DISTINCT key FROM verdicts WHERE id > ?", (last,))
        return {key for (key,) in cur}

    def verdict_history(self, key: str) -> list[dict[str, Any]]:
        """Every verdict and note given to ``key``, oldest first."""
        cur = self._conn.execute(
            "SELECT verdict, note, at, origin FROM verdicts WHERE key = ? ORDER BY id", (key,)
        )
        return [dict(zip(("verdict", "note", "at", "origin"), row, strict=True)) for row in cur]

    def rerolls(self) -> list[dict[str, Any]]:
        """Every reroll asked for: the rejected job, its take group and the new take."""
        cur = self._conn.execute("SELECT from_key, take_group, take, at FROM rerolls ORDER BY at")
        return [dict(zip(("from_key", "group", "take", "at"), row, strict=True)) for row in cur]

    def extra_takes(self) -> dict[str, int]:
        """Take group → the highest take rerolls asked for."""
        cur = self._conn.execute("SELECT take_group, max(take) FROM rerolls GROUP BY take_group")
        return {group: int(take) for group, take in cur}
