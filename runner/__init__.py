"""raybatch: run large batches of fal.ai generative-video jobs from a YAML manifest.

The Python API (also importable as ``raybatch``)::

    import raybatch

    summary = raybatch.plan("manifests/demo.yaml")          # jobs, cost, sources left out
    result = raybatch.run("manifests/demo.yaml", local=True, max_cost=10)
    raybatch.status("manifests/demo.yaml")["total"]          # {"done": 9}

``run`` works from a notebook whose event loop is running (in a thread of its own), and
``await raybatch.run_async(...)`` keeps that loop free. Every function raises the error tree
below (``ManifestError`` for a mistake, nothing submitted; ``FatalError`` when a run had to
stop) and never exits the process.
"""

from __future__ import annotations

__version__ = "0.1.0"

# The subpackage runner.plan is imported before the function plan is bound: importing a
# submodule the first time sets it as an attribute of its package, which would otherwise
# replace runner.plan, the function, with the module whenever a command first planned.
from . import plan as _plan_package  # noqa: F401
from ._api import PlanSummary, RunResult, plan, run, run_async, status
from .errors import (
    AuthError,
    DiskError,
    FatalError,
    ManifestError,
    PermanentError,
    Problem,
    RaybatchError,
    RetryableError,
    StateError,
    StateLocked,
)
from .job import JobSpec, LocalFile, job_key

__all__ = (
    "AuthError",
    "DiskError",
    "FatalError",
    "JobSpec",
    "LocalFile",
    "ManifestError",
    "PermanentError",
    "PlanSummary",
    "Problem",
    "RaybatchError",
    "RetryableError",
    "RunResult",
    "StateError",
    "StateLocked",
    "__version__",
    "job_key",
    "plan",
    "run",
    "run_async",
    "status",
)
