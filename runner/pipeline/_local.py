"""Local steps: work raybatch does itself as jobs of the graph (cut a segment, extract a
frame, stitch segments), each with one output file.

A step is a blocking function of a :class:`LocalJob`: it reads its inputs (its parents'
outputs, as local paths) and writes its one output at ``job.output``, a ``.part`` path
that the sink fsyncs and renames once the step returns. A step killed half way leaves
only a part, which the next run deletes before doing the step again. Steps run in worker
threads under their own limiter, never holding a remote slot.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DiskError, LocalStepFailed, RaybatchError
from ..job import JobSpec

#: OS errors that say the disk, not the step's input, is the problem.
_DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS})


@dataclass(frozen=True)
class LocalJob:
    """What a local step gets: its job, its arguments with every ``@job:`` placeholder
    replaced by the local path of that parent output, and where to write."""

    spec: JobSpec
    arguments: Mapping[str, Any]
    output: Path


#: A local step: write ``job.output`` from ``job.arguments`` (blocking).
LocalStep = Callable[[LocalJob], None]


def run_step(step: LocalStep, job: LocalJob) -> None:
    """Run ``step``; its failures leave as one classified error each."""
    try:
        step(job)
    except RaybatchError:
        raise
    except OSError as exc:
        if exc.errno in _DISK_ERRNOS:
            raise DiskError(f"cannot write {job.output}: {exc.strerror or exc}") from exc
        raise LocalStepFailed(f"{job.spec.endpoint}: {exc.strerror or exc}") from exc
    except Exception as exc:
        # A step's own failure (an undecodable input, say): this job fails, others go on.
        raise LocalStepFailed(f"{job.spec.endpoint}: {type(exc).__name__}: {exc}") from exc
