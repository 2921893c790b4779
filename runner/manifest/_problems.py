"""Every problem with a manifest, with its file, line and field."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..endpoints import (
    Loc,
    format_loc,
)
from ..errors import ManifestError, Problem, capped

# --------------------------------------------------------------------------- problems


class Problems:
    """Every problem found, deduplicated, with its line; raised together at the end."""

    def __init__(self, file: str, lines: Mapping[Loc, int]) -> None:
        self.file = file
        self.lines = lines
        self._found: dict[object, list[Any]] = {}  # key -> [Problem, count of more alike]
        self._more: Callable[[], tuple[list[Problem], Problem | None]] | None = None

    def before_raising(self, more: Callable[[], tuple[list[Problem], Problem | None]]) -> None:
        """When raising, also list the problems ``more`` returns then (after the sorted
        ones), and its footer last."""
        self._more = more

    def line(self, loc: Loc) -> int | None:
        """The line of ``loc`` or of its nearest ancestor that the file spells out."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return None

    def add(self, loc: Loc, message: str, *, alike: object = None) -> None:
        """Record a problem at ``loc``; those sharing an ``alike`` key are counted, not listed."""
        problem = Problem(self.file, self.line(loc), format_loc(loc), message)
        key = problem if alike is None else alike
        if key in self._found:
            self._found[key][1] += alike is not None
        else:
            self._found[key] = [problem, 0]

    def raise_if_any(self) -> None:
        """Raise one ManifestError listing everything found (the first few in full)."""
        if not self._found:
            return
        found = [
            Problem(
                p.file, p.line, p.field, p.message + (f" ({more} more like this)" if more else "")
            )
            for p, more in self._found.values()
        ]
        found.sort(key=lambda p: p.line or 0)
        more, footer = self._more() if self._more is not None else ([], None)
        raise ManifestError(capped(found + more, footer))
