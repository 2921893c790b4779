"""What each endpoint accepts as source media, as one table of cited rows.

Sources disagree on the longest clip Ray 3.2 edits (fal sells 5 s and 10 s slots, Luma's
typed schema says 18 s, its marketing 20 s, GMI 30 s): the table holds the strictest value a
fal user can rely on, with its source, and a manifest's ``limits:`` can raise it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator, PositiveFloat, PositiveInt

from runner.endpoints.base import Strict
from runner.endpoints.registry import REFRAME, VIDEO_TO_VIDEO

MB = 1_000_000


@dataclass(frozen=True, slots=True)
class Limit:
    """One row: ``name`` = ``value`` for ``endpoint`` (an fnmatch pattern in the table)."""

    endpoint: str
    name: str
    value: float | tuple[str, ...]
    source: str
    date: str = ""
    note: str = ""

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
        return f"({self.source}, {self.date})" if self.date else f"({self.source})"


AppliedLimit = Limit

LIMITS: tuple[Limit, ...] = (
    Limit(
        "luma/agent/*",
        "max_file_bytes",
        200 * MB,
        "Luma Agents API",
        "2026-07-10",
        "URL and base64 sources up to 200 MB (generative-media-skills, from Luma's docs)",
    ),
    Limit(
        "luma/agent/*",
        "video_containers",
        ("mp4", "mov", "webm", "m4v", "gif"),
        "fal upload widget for Luma video",
        note="fal ray-2 modify playground; no codec whitelist is documented anywhere",
    ),
    Limit(
        "luma/agent/*",
        "image_containers",
        ("jpg", "jpeg", "png", "webp", "gif", "avif"),
        "fal upload widget for Luma stills",
        note="fal ray-2 modify first-frame input",
    ),
    Limit(
        VIDEO_TO_VIDEO,
        "max_source_seconds",
        10.0,
        "fal",
        "2026-10-08",
        "fal sells only 5 s and 10 s edit slots and its integrators refuse longer clips;"
        " Luma's typed schema allows 18 s, its marketing 20 s, GMI 30 s",
    ),
    Limit(
        REFRAME,
        "max_source_seconds",
        10.0,
        "fal live schema",
        "2026-10-08",
        "fal's live schema says 'must be 10 seconds or less'; older fal page, Luma and GMI: 30 s",
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


def limits_for(endpoint: str, overrides: LimitOverrides | None = None) -> dict[str, Limit]:
    """The limits that apply to ``endpoint``, by name: table rows, then manifest overrides."""
    found = {
        row.name: Limit(endpoint, row.name, row.value, row.source, row.date, row.note)
        for row in LIMITS
        if fnmatch.fnmatchcase(endpoint, row.endpoint)
    }
    if overrides is not None:
        for name, value in overrides.model_dump(exclude_none=True).items():
            shown = tuple(value) if isinstance(value, list) else value
            found[name] = Limit(endpoint, name, shown, "manifest")
    return found
