"""Named points where the crash tests may kill the runner on purpose.

``RAYBATCH_CRASH_AT=<point>:<n>`` makes the n-th arrival at ``point`` end the process
at once with ``os._exit(137)`` — what SIGKILL does, but at an exact place instead of a
random moment. Unset (always, outside tests), :func:`reached` is one dict lookup.

Points, in the order a job meets them:

    after_intent     the submit intent is committed; the POST has not been sent
    after_post       fal answered the POST; the request id is not yet recorded
    after_record     the request id is committed
    after_result     the result JSON is committed
    mid_download     a chunk of an output was written to its ``.part`` file
    after_rename     an output is under its final name; ``done`` is not yet committed
    after_done       ``done`` is committed
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
)


def _parse(spec: str | None) -> tuple[str, int] | None:
    if not spec:
        return None
    name, _, count = spec.partition(":")
    if name not in POINTS:
        raise ValueError(f"RAYBATCH_CRASH_AT: unknown point {name!r}; known: {', '.join(POINTS)}")
    return name, int(count or "1")


_TARGET = _parse(os.environ.get("RAYBATCH_CRASH_AT"))
_seen: dict[str, int] = {}


def reached(point: str) -> None:
    """Note that ``point`` was reached; exit at once if this is the arrival asked for."""
    if _TARGET is None or _TARGET[0] != point:
        return
    _seen[point] = _seen.get(point, 0) + 1
    if _seen[point] == _TARGET[1]:
        os._exit(137)
