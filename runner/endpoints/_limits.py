"""What each endpoint accepts as source media, as one table of cited rows.

Sources disagree on the longest clip Ray 3.2 edits (fal sells 5 s and 10 s edit slots,
Luma's typed schema says 18 s, its marketing 20 s, GMI 30 s): the table holds the strictest
value a fal user can rely on, with its source, and a manifest's ``limits:`` or a
``--prices`` file can raise it. Overridden rows name the user's file as their source.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator, PositiveFloat, PositiveInt

from runner.endpoints._base import Strict
from runner.endpoints._cite import FAL_R2_MODIFY, FAL_REFRAME, FAL_TYPES, FAL_V2V, SKILL, Cite
from runner.endpoints._registry import REFRAME, VIDEO_TO_VIDEO

MB = 1_000_000


@dataclass(frozen=True, slots=True)
class Limit:
    """One row: ``name`` = ``value`` for ``endpoint`` (an fnmatch pattern in the table)."""

    endpoint: str
    name: str
    value: float | tuple[str, ...]
    source: str
    date: str
    note: str = ""
    user: bool = False

    @property
    def number(self) -> float:
        """The value of a numeric limit (seconds, bytes)."""
        if isinstance(self.value, tuple):
            raise TypeError(f"limit {self.name} is a list, not a number")
        return float(self.value)

    @property
    def choices(self) -> tuple[str, ...]:
        """The value of a list limit (accepted extensions)."""
        return self.value if isinstance(self.value, tuple) else (str(self.value),)

    @property
    def cite(self) -> str:
        """``(source, date)``, as error messages show it."""
        return f"({self.source}, {self.date})"


AppliedLimit = Limit


def _row(endpoint: str, name: str, value: float | tuple[str, ...], cite: Cite, note: str) -> Limit:
    return Limit(endpoint, name, value, cite.source, cite.date, note)


LIMITS: tuple[Limit, ...] = (
    _row(
        "luma/agent/*",
        "max_file_bytes",
        200 * MB,
        SKILL,
        "URL and base64 sources up to 200 MB (Luma's docs, per the audit); fal states no limit",
    ),
    _row(
        "luma/agent/*",
        "video_containers",
        ("mp4", "mov", "webm", "m4v", "gif"),
        FAL_R2_MODIFY,
        "no codec or container list is documented for Ray 3.2; this is fal's Ray 2 widget's",
    ),
    _row(
        "luma/agent/*",
        "image_containers",
        ("jpg", "jpeg", "png", "webp", "gif", "avif"),
        FAL_R2_MODIFY,
        "the first-frame input of fal's Ray 2 modify page",
    ),
    _row(
        VIDEO_TO_VIDEO,
        "max_source_seconds",
        10.0,
        FAL_V2V,
        "fal sells only 5s and 10s edits and states no source limit; Luma's typed schema"
        " allows 18 s, its marketing 20 s, GMI 30 s",
    ),
    _row(
        REFRAME,
        "max_source_seconds",
        30.0,
        FAL_REFRAME,
        f"'must be 30 seconds or less', also in {FAL_TYPES}; a third party read 10 s in"
        " fal's schema on 2026-10-08 (raybatch's seed used that): fal's page wins",
    ),
)


def _extensions(value: object) -> object:
    if isinstance(value, list):
        return [str(item).lower().lstrip(".") for item in value]
    return value


Extensions = Annotated[list[str], BeforeValidator(_extensions)]


class LimitOverrides(Strict):
    """A manifest's replacements for one endpoint's rows (``limits: {endpoint: {...}}``)."""

    max_source_seconds: PositiveFloat | None = None
    """The longest source clip accepted, in seconds."""
    max_file_bytes: PositiveInt | None = None
    """The largest local file accepted, in bytes."""
    video_containers: Extensions | None = None
    """Accepted video file extensions (mp4, mov, ...)."""
    image_containers: Extensions | None = None
    """Accepted image file extensions (jpg, png, ...)."""


def limits_for(
    endpoint: str, overrides: Iterable[tuple[LimitOverrides, Cite]] = ()
) -> dict[str, Limit]:
    """The limits that apply to ``endpoint``, by name: table rows, then each user's
    overrides in turn (a later one wins), marked as the user's with their source."""
    found = {
        row.name: Limit(endpoint, row.name, row.value, row.source, row.date, row.note)
        for row in LIMITS
        if fnmatch.fnmatchcase(endpoint, row.endpoint)
    }
    for layer, cite in overrides:
        for name, value in layer.model_dump(exclude_none=True).items():
            shown = tuple(value) if isinstance(value, list) else value
            found[name] = Limit(endpoint, name, shown, cite.source, cite.date, user=True)
    return found
