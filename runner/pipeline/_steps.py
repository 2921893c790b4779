"""The local steps raybatch ships, by endpoint: what a run does when a plan names one.

- ``local/cut``: one segment of a clip, prepared for fal (frame-exact, upright, constant
  rate, scaled to the requested resolution, within the size limit: ``media.cut_segment``);
- ``local/frame``: one upright frame of a video as a PNG: its first, its last, or the one
  on screen at a time in seconds (``media.extract_frame``);
- ``local/stitch``: a long clip's renders joined in order, overlaps trimmed or blended,
  with the source's sound for the same time range (``media.stitch``).

A step's input is its job's arguments: a parent's output arrives as its local path, a
file of the manifest as its ``@local:`` placeholder (the job's ``files`` hold the path).
Each writes its one output at ``job.output``, a part the sink renames into place.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LocalStepFailed
from ..job import LOCAL_PREFIX
from ._local import LocalJob, LocalStep

if TYPE_CHECKING:
    from ..media import Segment, Which

# ``media`` (PyAV, numpy) is imported by the steps that use it: a run of remote jobs only,
# and every command that only names ``STEPS``, starts without it (0.2 s).


def cut(job: LocalJob) -> None:
    """Write one segment of ``video_url`` (frames ``first`` .. ``first + frames - 1`` at
    ``rate``), scaled to at most ``max_height``, within ``max_bytes``."""
    from ..media import Segment, cut_segment

    arguments = job.arguments
    first, frames, rate = (_integer(job, name) for name in ("first", "frames", "rate"))
    index = job.spec.labels.get("segment", 0)
    segment = Segment(int(index), rate, first, frames, round(frames / rate), first, first + frames)
    cut_segment(
        _path(job, arguments.get("video_url")),
        segment,
        job.output,
        max_height=_optional(job, "max_height"),
        max_bytes=_optional(job, "max_bytes"),
    )


def frame(job: LocalJob) -> None:
    """Write the frame of ``video_url`` that ``at`` names (``first``, ``last`` or seconds)
    as a PNG."""
    from ..media import extract_frame

    at = job.arguments.get("at", "first")
    which: Which
    if at in ("first", "last"):
        which = at
    elif isinstance(at, int | float) and not isinstance(at, bool):
        which = float(at)
    else:
        raise LocalStepFailed(f"{job.spec.endpoint}: at must be first, last or seconds, not {at!r}")
    extract_frame(_path(job, job.arguments.get("video_url")), which, job.output, fmt="png")


def stitch_renders(job: LocalJob) -> None:
    """Join ``parts`` (renders, in order) as ``segments`` say, blending overlaps when
    ``blend``, with the sound of ``audio_url`` when given."""
    from ..media import stitch

    arguments = job.arguments
    parts, rows = arguments.get("parts"), arguments.get("segments")
    if not isinstance(parts, list) or not isinstance(rows, list) or len(parts) != len(rows):
        raise LocalStepFailed(f"{job.spec.endpoint}: needs as many parts as segments")
    segments = [_segment(job, row) for row in rows]
    sound = arguments.get("audio_url")
    stitch(
        [(_path(job, part), segment) for part, segment in zip(parts, segments, strict=True)],
        job.output,
        audio_from=_path(job, sound) if sound is not None else None,
        blend_overlaps=bool(arguments.get("blend", False)),
    )


def _path(job: LocalJob, value: Any) -> Path:
    """A step's input file: a parent's output (a path by now) or a manifest's local file."""
    if isinstance(value, str) and value.startswith(LOCAL_PREFIX):
        local = job.spec.files.get(value.removeprefix(LOCAL_PREFIX))
        if local is None:
            raise LocalStepFailed(f"{job.spec.endpoint}: its job lists no file {value}")
        return local.path
    if not isinstance(value, str) or not value:
        raise LocalStepFailed(f"{job.spec.endpoint}: needs a local file, not {value!r}")
    return Path(value)


def _segment(job: LocalJob, row: Any) -> Segment:
    """A segment from its stitch row: index, rate, first, frames, seconds, keep_first,
    keep_end, blend_frames (``manifest`` writes them so)."""
    if not isinstance(row, list) or len(row) != 8 or not all(isinstance(v, int) for v in row):
        raise LocalStepFailed(f"{job.spec.endpoint}: a segment is 8 whole numbers, not {row!r}")
    from ..media import Segment

    index, rate, first, frames, seconds, keep_first, keep_end, blend = row
    return Segment(index, rate, first, frames, seconds, keep_first, keep_end, blend)


def _integer(job: LocalJob, name: str) -> int:
    value = job.arguments.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise LocalStepFailed(f"{job.spec.endpoint}: {name} must be a whole number, not {value!r}")
    return value


def _optional(job: LocalJob, name: str) -> int | None:
    return None if job.arguments.get(name) is None else _integer(job, name)


#: Every local step a plan may name, by endpoint.
STEPS: Mapping[str, LocalStep] = {
    "local/cut": cut,
    "local/frame": frame,
    "local/stitch": stitch_renders,
}
