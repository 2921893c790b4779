"""The local steps raybatch ships, by endpoint: what a run does when a plan names one.

``local/frame``: a clip's first frame as an upright PNG at the clip's size
(``gate: looks`` starts each look from it).
"""

from __future__ import annotations

from collections.abc import Mapping

from ..errors import LocalStepFailed
from ..job import LOCAL_PREFIX
from ..media import extract_frame
from ._local import LocalJob, LocalStep


def first_frame(job: LocalJob) -> None:
    """Write the first frame of ``video_url`` (a local clip) to ``job.output`` as a PNG."""
    reference = job.arguments.get("video_url")
    local = None
    if isinstance(reference, str) and reference.startswith(LOCAL_PREFIX):
        local = job.spec.files.get(reference.removeprefix(LOCAL_PREFIX))
    if local is None:
        raise LocalStepFailed(f"local/frame needs a local clip, not {reference!r}")
    extract_frame(local.path, "first", job.output, fmt="png")


#: Every local step a plan may name.
STEPS: Mapping[str, LocalStep] = {"local/frame": first_frame}
