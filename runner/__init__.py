"""raybatch: run large batches of fal.ai generative-video jobs from a YAML manifest.

The public surface is this module; everything else is reached through it or the CLI.
"""

from __future__ import annotations

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

__version__ = "0.1.0"

__all__ = (
    "AuthError",
    "DiskError",
    "FatalError",
    "JobSpec",
    "LocalFile",
    "ManifestError",
    "PermanentError",
    "Problem",
    "RaybatchError",
    "RetryableError",
    "StateError",
    "StateLocked",
    "__version__",
    "job_key",
)
