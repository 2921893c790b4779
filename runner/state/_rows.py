"""What the state file holds, as Python values: a job row, an output file, an error, spend."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ._jobstate import JobState

#: One change to the state: run by the single writer inside its transaction.
Op = Callable[[sqlite3.Connection], None]


@dataclass(frozen=True, slots=True)
class OutputFile:
    """One verified output file, as recorded when its job is done."""

    path: str
    sha256: str
    size: int
    url: str
    field: str
    #: The file's mtime when it was recorded (None in older states): ``verify`` and
    #: ``run`` notice an edited file by it without reading every byte.
    mtime_ns: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in the state and in ``results.jsonl``."""
        data: dict[str, Any] = {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "url": self.url,
            "field": self.field,
        }
        if self.mtime_ns is not None:
            data["mtime_ns"] = self.mtime_ns
        return data


@dataclass(frozen=True, slots=True)
class JobRow:
    """A job as the state file knows it."""

    key: str
    endpoint: str
    kind: str
    clip: str | None
    prompt: str | None
    labels: dict[str, Any]
    output: str
    state: JobState
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
    superseded_by: str | None
    take: int
    role: str | None
    verdict: str | None  # "approved", "rejected", or None: not judged
    note: str | None
    judged_at: float | None
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
        data["state"] = JobState(data["state"])
        data["labels"] = json.loads(data["labels"]) if data["labels"] else {}
        data["result"] = json.loads(data["result"]) if result and data["result"] else None
        data["outputs"] = json.loads(data["outputs"]) if data["outputs"] else []
        return cls(**data)


class FileStamp(NamedTuple):
    """What checking a done output needs of its record (see ``OutputFile``)."""

    path: str
    size: int
    sha256: str
    mtime_ns: int | None


class ShownRow(NamedTuple):
    """What the review page shows of a job's row (``StateStore.shown_rows``): a tenth of a
    ``JobRow``'s memory, which at 10k jobs was 26 MB of the page's making."""

    key: str
    state: JobState
    outputs: list[dict[str, Any]]
    attempts: int
    request_id: str | None
    billable_units: float | None
    error_class: str | None
    error: str | None
    verdict: str | None
    note: str | None
    judged_at: float | None


class Unfinished(NamedTuple):
    """What a resumed run reads of a job it has yet to finish."""

    state: JobState
    attempts: int
    ambiguous: int
    request_id: str | None
    status_url: str | None
    response_url: str | None
    cancel_url: str | None
    result: dict[str, Any] | None  # only once completed: the result to download
    error_class: str | None
    error: str | None


PENDING_ROW = Unfinished(JobState.PENDING, 0, 0, None, None, None, None, None, None, None)
BLOCKED_ROW = PENDING_ROW._replace(state=JobState.BLOCKED)


class Spend(NamedTuple):
    """What fal may have billed: every attempt it accepted or may have accepted."""

    usd: float
    billable_units: float
    paid_attempts: int  # submissions fal accepted or may have (ambiguous ones included)
    resubmitted: int  # paid attempts beyond each job's first: each one was paid again
    ambiguous: int  # paid attempts whose answer was lost


class StoredJob(NamedTuple):
    """What the state keeps of a job's definition (its plan, when the manifest cannot be
    planned again)."""

    key: str
    endpoint: str
    arguments: dict[str, Any]
    output: str
    clip: str | None
    prompt: str | None
    labels: dict[str, Any]
    estimated_cost: float | None
    take: int = 1


class JobTally(NamedTuple):
    """What ``status`` counts of a job."""

    state: JobState
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
