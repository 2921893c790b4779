"""Named points where the crash tests may kill the runner on purpose.

``RAYBATCH_CRASH_AT=<point>:<n>``, read by ``raybatch run`` when it starts (see
:func:`arm`), makes the n-th arrival at ``point`` end the process at once with
``os._exit(137)`` — what SIGKILL does, but at an exact place instead of a random moment.
Unarmed (always, outside tests), :func:`reached` is one comparison.

Points, in the order a job meets them:

    after_intent     the submit intent is committed; the POST has not been sent
    after_post       fal answered the POST; the request id is not yet recorded
    after_record     the request id is committed
    after_result     the result JSON is committed
    mid_download     a chunk of an output was written to its ``.part`` file
    after_rename     an output is under its final name; ``done`` is not yet committed
    after_done       ``done`` is committed
    after_step       a local step's output is under its final name; ``done`` is not yet
                     committed
"""

from __future__ import annotations

import os

POINTS = (
    "after_intent",
    "after_post",
    "after_record",
    "after_result",
    "mid_download",
    "after_rename",
    "after_done",
    "after_step",
)


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"RAYBATCH_CRASH_AT: unknown point {name!r}; known: {', '.join(POINTS)}")
    return name, int(count or "1")


class _Armed:
    """The point asked for, and how often it was reached (one per process: a test hook)."""

    target: tuple[str, int] | None = None
    seen = 0


def arm(spec: str | None) -> None:
    """Crash at ``<point>:<n>`` (the value of ``RAYBATCH_CRASH_AT``); None disarms."""
    _Armed.target, _Armed.seen = _parse(spec), 0


def reached(point: str) -> None:
    """Note that ``point`` was reached; exit at once if this is the arrival asked for."""
    target = _Armed.target
    if target is None or target[0] != point:
        return
    _Armed.seen += 1
    if _Armed.seen == target[1]:
        os._exit(137)
