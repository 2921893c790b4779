"""Checking done outputs against what the state recorded of them (``raybatch verify``, and
``run`` before it calls a batch done), and what becomes of a job whose files are missing
or altered: fetched again from its kept result (free while fal still holds it), or with
``--rerender`` rendered again as a new, paid request."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..outputs import OutputSink
from ..state import ErrorInfo, FileStamp, JobState, StateStore, StateWriter, Transitions


@dataclass
class Rechecked:
    """What a run's check of done outputs found: what to tell the user, and the jobs it
    sent back to be fetched (or rendered) again."""

    notes: list[str]
    reopened: list[str]


#: The error class a job carries while its outputs wait to be fetched again.
NEEDS_FETCH = "OutputMissing"


def refetch_failed(error: Exception) -> ErrorInfo:
    """Why a job whose output went missing failed: its result could not be downloaded
    again (fal no longer holds it, most likely)."""
    return ErrorInfo(
        "permanent",
        NEEDS_FETCH,
        f"its output was missing and could not be downloaded again ({error});"
        " `raybatch run --rerender` renders it again (billed again)",
    )


def damaged_outputs(
    files: Mapping[str, list[FileStamp]] | Iterable[tuple[str, list[FileStamp]]],
    sink: OutputSink,
    *,
    full: bool = False,
) -> dict[str, str]:
    """key → why its files are not as recorded, for each job of ``files`` (a mapping, or
    (key, files) pairs, taken one at a time) that has one.

    Quick: a stat per file (and a hash of a file whose mtime changed); ``full``: the
    sha256 of every file, several at once (hashing releases the GIL).
    """
    pairs = files.items() if isinstance(files, Mapping) else files

    def why(pair: tuple[str, list[FileStamp]]) -> tuple[str, str | None]:
        key, stamps = pair
        for f in stamps:
            problem = sink.check(f.path, f.size, f.sha256, mtime_ns=f.mtime_ns, full=full)
            if problem is not None:
                return key, problem
        return key, None

    if full:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            found = pool.map(why, pairs)
            return {key: problem for key, problem in found if problem is not None}
    return {key: problem for key, problem in map(why, pairs) if problem is not None}


def to_rerender(store: StateStore, keys: Iterable[str], damaged: Iterable[str]) -> list[str]:
    """The jobs ``--rerender`` renders again, among ``keys``: the ``damaged`` done ones,
    and those waiting to be fetched again or whose fetch again failed."""
    wanted = set(keys)
    again = set(damaged)
    for row in store.rows_in((JobState.COMPLETED, JobState.FAILED)):
        if row.key in wanted and row.error_class == NEEDS_FETCH:
            again.add(row.key)
    return sorted(again)


async def mark_damaged(
    writer: StateWriter, damaged: Mapping[str, str], *, rerender: Iterable[str] = ()
) -> None:
    """Damaged done jobs need fetching again (done → completed, their result kept); the
    ``rerender`` ones go back to pending for a new request instead."""
    again = set(rerender)
    ops = [
        Transitions.rerender(key, f"rendered again (--rerender): {damaged.get(key, 'asked')}")
        for key in sorted(again)
    ]
    ops += [
        Transitions.outputs_missing(key, f"needs fetch: {why}")
        for key, why in damaged.items()
        if key not in again
    ]
    if ops:
        await writer.apply(*ops)
