"""The engine: runs a plan's job graph to completion against fal, recording every
transition, with one fault-policy table deciding what each failure costs."""

from __future__ import annotations

from ._cancel import CancelOutcome, cancel_requests
from ._local import LocalJob, LocalStep
from ._options import NullObserver, RunObserver, RunOptions, RunSummary
from ._policy import TABLE, Action, Limits, Policy, retry_state
from ._scheduler import Scheduler
from ._steps import STEPS

__all__ = (
    "STEPS",
    "TABLE",
    "Action",
    "CancelOutcome",
    "Limits",
    "LocalJob",
    "LocalStep",
    "NullObserver",
    "Policy",
    "RunObserver",
    "RunOptions",
    "RunSummary",
    "Scheduler",
    "cancel_requests",
    "retry_state",
)
