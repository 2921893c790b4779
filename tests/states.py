"""Building states by hand for tests that need one: legal transition sequences only."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from runner.job import JobSpec
from runner.state import ErrorInfo, OutputFile, StateStore, Transitions

Op = Callable[[sqlite3.Connection], None]


def apply(store: StateStore, ops: Sequence[Op]) -> None:
    """Commit ``ops`` in one transaction; fail the test on any refused transition."""
    refused = [error for error in store.execute_batch(ops) if error is not None]
    assert not refused, refused


def add(store: StateStore, specs: Iterable[JobSpec]) -> None:
    """Add jobs as a plan would (no plan identity recorded)."""
    apply(store, [Transitions.add_plan(specs, None)])


def submitted(key: str, request_id: str, cost: float | None = 0.72) -> list[Op]:
    """A job submitted and accepted by fal (queued)."""
    base = f"https://queue.fal.run/luma/agent/requests/{request_id}"
    return [
        Transitions.intent(key, 1, cost),
        Transitions.submitted(key, request_id, f"{base}/status", base, f"{base}/cancel"),
    ]


def done(
    key: str,
    outputs: Sequence[OutputFile],
    *,
    request_id: str = "req",
    cost: float | None = 0.72,
    units: float | None = 5.0,
) -> list[Op]:
    """A job taken through a paid request to done with ``outputs``."""
    result: dict[str, Any] = {"video": {"url": outputs[0].url if outputs else "u"}}
    return [
        *submitted(key, request_id, cost),
        Transitions.completed(key, result, units),
        Transitions.done(key, outputs),
    ]


def failed(key: str, cls: str = "ContentModerated", message: str = "refused") -> list[Op]:
    """A job that failed before anything was submitted."""
    return [Transitions.failed(key, ErrorInfo("permanent", cls, message))]
