"""``results.jsonl``: one line per finished job, rewritten atomically."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import DiskError
from ..job import canonical_json
from ..state import StateStore


def write_results(store: StateStore, path: Path, keys: Sequence[str] | None = None) -> int:
    """Rewrite ``results.jsonl`` atomically: one line per finished job of ``keys`` (None:
    every one), and one per superseded job, whose files are kept; returns the count."""
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    spend = store.spend_by_job()
    wanted = None if keys is None else set(keys)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for r in store.finished_records():
                if wanted is not None and r["key"] not in wanted and not r["superseded_by"]:
                    continue
                out.write(canonical_json(result_record(r, spend.get(r["key"]))) + "\n")
                count += 1
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        # No half-written results.jsonl.tmp left behind: not after a full disk, nor after a
        # second Ctrl-C that lands while the file is written (the old file stays whole).
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise DiskError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    return count


def result_record(
    r: sqlite3.Row | Mapping[str, Any], spend: tuple[float, int] | None = None
) -> dict[str, Any]:
    """One ``results.jsonl`` line for a finished job; ``spend`` is what fal may have billed
    for it and in how many submissions (``StateStore.spend_by_job``)."""
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
        "labels": json.loads(r["labels"]) if r["labels"] else {},
        "take": r["take"],
        "role": r["role"],
        "verdict": r["verdict"],
        "note": r["note"],
        "billable_units": r["billable_units"],
        "estimated_cost": r["estimated_cost"],
        "spend": spend[0] if spend else 0.0,
        "paid_submissions": spend[1] if spend else 0,
        "attempts": r["attempts"],
        "ambiguous_submits": r["ambiguous"],
        # The job that now renders to this one's output path (its files are kept aside).
        "superseded_by": r["superseded_by"],
        "timings": timings,
        "error": None
        if r["error"] is None or r["state"] == "done"
        else {"class": r["error_class"], "type": r["error_type"], "message": r["error"]},
    }
