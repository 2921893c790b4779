"""The engine: runs a plan's jobs to completion against fal, recording every transition."""

from __future__ import annotations

from ._scheduler import (
    CancelOutcome,
    NullObserver,
    RunObserver,
    RunOptions,
    RunSummary,
    Scheduler,
    cancel_requests,
)

__all__ = (
    "CancelOutcome",
    "NullObserver",
    "RunObserver",
    "RunOptions",
    "RunSummary",
    "Scheduler",
    "cancel_requests",
)
