"""The engine: runs a plan's job graph to completion against fal, recording every
transition, with one fault-policy table deciding what each failure costs."""

from __future__ import annotations

from ._cancel import CancelOutcome, cancel_requests, serve_requests
from ._local import LocalJob, LocalStep
from ._options import NullObserver, RunObserver, RunOptions, RunSummary
from ._policy import TABLE, Action, Limits, Policy, retry_state
from ._scheduler import Scheduler
from ._steps import STEPS
from ._superseded import aside_path, keep_superseded
from ._verify import NEEDS_FETCH, Rechecked, damaged_outputs, mark_damaged, to_rerender

__all__ = (
    "NEEDS_FETCH",
    "STEPS",
    "TABLE",
    "Action",
    "CancelOutcome",
    "Limits",
    "LocalJob",
    "LocalStep",
    "NullObserver",
    "Policy",
    "Rechecked",
    "RunObserver",
    "RunOptions",
    "RunSummary",
    "Scheduler",
    "aside_path",
    "cancel_requests",
    "damaged_outputs",
    "keep_superseded",
    "mark_damaged",
    "retry_state",
    "serve_requests",
    "to_rerender",
)
