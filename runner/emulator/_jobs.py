"""One emulated request and how it ends: fal's statuses, a request's outcome, its record.

A ``Job`` is the account's record of one request; ``record()``/``from_record()`` turn it
into plain JSON and back, so that an emulator with a state directory can stop and start
again with the same requests.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from . import rules
from .protocol import REQUEST_ERRORS, app_prefix, iso_timestamp, request_error_parts

BILLABLE_UNITS_HEADER = "x-fal-billable-units"


class State(StrEnum):
    """fal's three queue statuses; there is no FAILED or CANCELLED."""

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"


@runtime_checkable
class RenderedLike(Protocol):
    """What ``render.RenderedFile`` looks like; matched by shape, not imported."""

    data: bytes
    content_type: str
    file_name: str
    extra: dict[str, Any]


class FetchError(ValueError):
    """A model input URL the emulator cannot read (it has no Internet)."""

    def __init__(self, url: str) -> None:
        super().__init__(f"could not fetch {url[:200]}")
        self.url = url


@dataclass
class Outcome:
    """How a finished request answers on its result URL and in its status."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    #: Models reject bad input at once instead of running for the job's duration.
    early: bool = False

    @classmethod
    def model_error(cls, details: list[rules.Detail]) -> Outcome:
        """A 422 from the model: only the result shows the details, as on fal."""
        headers = {BILLABLE_UNITS_HEADER: "0"}
        return cls(422, {"detail": details}, headers, "Invalid status code: 422", early=True)

    @classmethod
    def request_error(cls, error_type: str, **headers: str) -> Outcome:
        """A request error with its documented status, flat body and X-Fal-Error-Type."""
        status, body, error_headers = request_error_parts(error_type)
        all_headers = {BILLABLE_UNITS_HEADER: "0", **error_headers, **headers}
        return cls(status, body, all_headers, REQUEST_ERRORS[error_type][1], error_type)

    @classmethod
    def path_not_found(cls, path: str) -> Outcome:
        """An app asked for a path it does not serve: fal's app framework answers 404
        ``{"detail": "Path /x not found"}``, billing nothing (fal-protocol §4)."""
        body = {"detail": f"Path /{path} not found"}
        return cls(404, body, {BILLABLE_UNITS_HEADER: "0"}, "Invalid status code: 404", early=True)

    @property
    def billable_units(self) -> float:
        """What fal billed for this outcome (its x-fal-billable-units, else 0)."""
        try:
            return float(self.headers.get(BILLABLE_UNITS_HEADER, "0"))
        except ValueError:
            return 0.0

    def record(self) -> dict[str, Any]:
        """The outcome as JSON."""
        return {
            "status": self.status,
            "body": self.body,
            "headers": self.headers,
            "error": self.error,
            "error_type": self.error_type,
            "early": self.early,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> Outcome:
        """An outcome from :meth:`record`'s JSON."""
        return cls(**data)


@dataclass(eq=False)
class Job:
    """One queued request. Wall-clock ``*_at`` fields are for stats, the rest is monotonic."""

    id: str
    endpoint: str
    arguments: Any
    input_sha256: str
    origin: str
    duration: float
    low_priority: bool = False
    deadline: float | None = None
    forced: Outcome | None = None
    state: State = State.IN_QUEUE
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    completed_at: float | None = None
    #: Wall time the result route first answered for the completed request (bench latency).
    first_result_at: float | None = None
    started: float = 0.0
    ends: float = math.inf
    completed: float = 0.0
    attempt: int = 0
    outcome: Outcome | None = None
    regressed: bool = False
    expired: bool = False
    #: A client asked to cancel it (whatever came of that).
    cancel_requested: bool = False
    #: The cancel took effect: removed from the queue, or (``--cancel-running abort``) cut off.
    cancelled: bool = False
    logs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        """The ``owner/app`` its URLs use."""
        return app_prefix(self.endpoint)

    @property
    def urls(self) -> dict[str, str]:
        """response/status/cancel URLs in the app-only form fal returns."""
        base = f"{self.origin}/{self.prefix}/requests/{self.id}"
        return {
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
        }

    @property
    def billable_units(self) -> float:
        """Units billed: those of its outcome once COMPLETED, else 0 (nothing billed yet)."""
        if self.state is not State.COMPLETED or self.outcome is None:
            return 0.0
        return self.outcome.billable_units

    def log(self, message: str, level: str = "INFO") -> None:
        """Append a log line in fal's shape."""
        entry = {
            "message": message,
            "level": level,
            "source": "USER",
            "timestamp": iso_timestamp(time.time()),
        }
        self.logs.append(entry)

    def summary(self) -> dict[str, Any]:
        """The job as the stats route lists it, with what was billed for it."""
        completed = self.state is State.COMPLETED and self.outcome is not None
        return {
            "request_id": self.id,
            "endpoint": self.endpoint,
            "input_sha256": self.input_sha256,
            "state": self.state.value,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "first_result_at": self.first_result_at,
            "error_type": self.outcome.error_type if completed and self.outcome else None,
            "billable_units": self.billable_units,
            "billed": self.billable_units > 0,
            "cancel_requested": self.cancel_requested,
            "cancelled": self.cancelled,
            "outputs": list(self.outputs),
        }

    def record(self, now_mono: float) -> dict[str, Any]:
        """The job as JSON; monotonic times become wall times (``now_mono`` is now)."""
        wall = time.time()

        def to_wall(mono: float | None) -> float | None:
            return None if mono is None or math.isinf(mono) else wall - (now_mono - mono)

        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "arguments": self.arguments,
            "input_sha256": self.input_sha256,
            "duration": self.duration,
            "low_priority": self.low_priority,
            "deadline": to_wall(self.deadline),
            "forced": self.forced.record() if self.forced else None,
            "state": self.state.value,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "first_result_at": self.first_result_at,
            "outcome": self.outcome.record() if self.outcome else None,
            "regressed": self.regressed,
            "expired": self.expired,
            "cancel_requested": self.cancel_requested,
            "cancelled": self.cancelled,
            "logs": self.logs,
            "outputs": self.outputs,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any], origin: str, now_mono: float) -> Job:
        """A job from :meth:`record`'s JSON, its wall times mapped back to monotonic ones."""
        wall = time.time()

        def to_mono(stamp: float | None) -> float | None:
            return None if stamp is None else now_mono - (wall - stamp)

        job = cls(
            id=data["id"],
            endpoint=data["endpoint"],
            arguments=data["arguments"],
            input_sha256=data["input_sha256"],
            origin=origin,
            duration=data["duration"],
            low_priority=data["low_priority"],
            deadline=to_mono(data["deadline"]),
            forced=Outcome.from_record(data["forced"]) if data["forced"] else None,
            state=State(data["state"]),
            submitted_at=data["submitted_at"],
            started_at=data["started_at"],
            completed_at=data["completed_at"],
            first_result_at=data["first_result_at"],
            outcome=Outcome.from_record(data["outcome"]) if data["outcome"] else None,
            regressed=data["regressed"],
            expired=data["expired"],
            cancel_requested=data["cancel_requested"],
            cancelled=data["cancelled"],
            logs=data["logs"],
            outputs=data["outputs"],
        )
        job.started = to_mono(job.started_at) or 0.0
        job.completed = to_mono(job.completed_at) or 0.0
        return job
