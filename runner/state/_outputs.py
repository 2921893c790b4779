"""What the state says of a batch's outputs: the files of done jobs to check again, those
of superseded jobs to keep aside (and of returning ones to put back), and the jobs the
state holds when the manifest cannot be planned. Read by ``verify``, by ``run`` before it
starts, and by the commands that need no source (see ``runner._locate``)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Set

from ._rows import FileStamp, OutputFile, StoredJob
from ._schema import MOVES_PENDING
from ._sql import translate_errors

#: Where a superseded job's files are kept, under the output directory: ``<dir>/<key>/…``.
ASIDE_DIR = ".superseded"


def _files(rows: Iterable[tuple[str, str | None]]) -> dict[str, list[OutputFile]]:
    return {key: [OutputFile(**o) for o in json.loads(text or "[]")] for key, text in rows}


class OutputReads:
    """Reads of ``StateStore`` about outputs (a mixin: the store gives the connection)."""

    _conn: sqlite3.Connection

    def done_outputs(self, keys: Iterable[str] | None = None) -> dict[str, list[FileStamp]]:
        """key → what was recorded of each file of every done job (of ``keys``): enough to
        check it is still there as it was."""
        return dict(self.each_done_output(keys))

    def each_done_output(
        self, keys: Iterable[str] | None = None
    ) -> Iterator[tuple[str, list[FileStamp]]]:
        """:meth:`done_outputs` one job at a time, as read (a check of 50,000 files holds
        none of them; ``keys`` given as a set is read through, not copied). Read narrowly:
        SQLite takes the first file out of the JSON (at 100k jobs ``json.loads`` per row
        cost most of the read); a job with more files is parsed whole."""
        wanted = keys if keys is None or isinstance(keys, Set) else set(keys)
        with translate_errors():
            cur = self._conn.execute(
                "SELECT key, outputs ->> '$[0].path', outputs ->> '$[0].size',"
                " outputs ->> '$[0].sha256', outputs ->> '$[0].mtime_ns',"
                " CASE WHEN json_array_length(outputs) > 1 THEN outputs END"
                " FROM jobs WHERE state = 'done'"
            )
            for key, path, size, sha256, mtime_ns, several in cur:
                if wanted is not None and key not in wanted:
                    continue
                if several is None:
                    yield key, [FileStamp(path, size, sha256, mtime_ns)] if path else []
                else:
                    yield (
                        key,
                        [
                            FileStamp(f["path"], f["size"], f["sha256"], f.get("mtime_ns"))
                            for f in json.loads(several)
                        ],
                    )

    def current_jobs(self) -> list[StoredJob]:
        """Every job no other job has superseded, in insertion order: what the state knows
        of a manifest's jobs when the manifest cannot be planned (a source moved away)."""
        with translate_errors():
            cur = self._conn.execute(
                "SELECT key, endpoint, arguments, output, clip, prompt, labels, estimated_cost,"
                " take FROM jobs WHERE superseded_by IS NULL ORDER BY rowid"
            )
            return [
                StoredJob(
                    key,
                    endpoint,
                    json.loads(args),
                    output,
                    clip,
                    prompt,
                    json.loads(labels) if labels else {},
                    cost,
                    take,
                )
                for key, endpoint, args, output, clip, prompt, labels, cost, take in cur
            ]

    def outputs_to_move(
        self,
    ) -> tuple[dict[str, list[OutputFile]], dict[str, list[OutputFile]]] | None:
        """(superseded done jobs whose files are still at their output paths, current done
        jobs whose files are kept aside), each as key → recorded files; None unless a plan
        added since the last move asks for it.

        A superseded job whose path a current done job already fills had its file
        overwritten before raybatch kept them (an older state file): nothing to move.
        """
        aside = f"outputs LIKE '%\"{ASIDE_DIR}/%'"
        with translate_errors():
            pending = self._conn.execute("SELECT 1 FROM meta WHERE key = ?", (MOVES_PENDING,))
            if pending.fetchone() is None:
                return None
            away = self._conn.execute(
                "SELECT key, outputs, output FROM jobs WHERE superseded_by IS NOT NULL"
                f" AND state = 'done' AND NOT {aside}"
            ).fetchall()
            if away:
                owned = {
                    output
                    for (output,) in self._conn.execute(
                        "SELECT output FROM jobs WHERE superseded_by IS NULL AND state = 'done'"
                        f" AND NOT {aside}"
                    )
                }
                away = [(key, text) for key, text, output in away if output not in owned]
            back = self._conn.execute(
                "SELECT key, outputs FROM jobs WHERE superseded_by IS NULL AND state = 'done'"
                f" AND {aside}"
            ).fetchall()
        return _files(away), _files(back)
