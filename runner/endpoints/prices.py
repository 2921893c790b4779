"""What a job is expected to cost, as one table of cited rows (USD).

A row prices a job when every field in its ``when`` equals the job's argument. Its ``per``
says what it multiplies: a flat ``job``, each started ``source_second`` (reframe bills the
source's length, rounded up), or each ``input_image`` (Uni-1 edit bills source and
reference images). A job costs its first matching ``job``/``source_second`` row plus every
matching ``input_image`` row; no matching base row means the cost is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import NonNegativeFloat

from runner.endpoints.base import Strict
from runner.endpoints.registry import (
    EDIT_IMAGE,
    IMAGE_TO_VIDEO,
    REFRAME,
    TEXT_TO_IMAGE,
    TEXT_TO_VIDEO,
    VIDEO_TO_VIDEO,
    spec_for,
)
from runner.media import MediaInfo

Per = Literal["job", "source_second", "input_image"]
# Container durations carry rounding noise (a 5 s clip may read 5.0004 s); fal bills whole
# started seconds of what it decodes, not of what the header says to the microsecond.
_SECOND_TOLERANCE = 0.01


@dataclass(frozen=True, slots=True)
class Price:
    """One row of the price table."""

    endpoint: str
    usd: float
    per: Per = "job"
    when: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    date: str = ""

    def matches(self, arguments: Mapping[str, Any]) -> bool:
        """Whether every ``when`` field equals the job's argument."""
        return all(arguments.get(name) == value for name, value in self.when.items())


# (resolution, duration, hdr, exr_export) -> USD
Grid = Mapping[tuple[str, str, bool, bool], float]

# fal's video-to-video card (confirmed by apicity's estimator and recast, 2026-10-08).
_EDIT: Grid = {
    ("540p", "5s", False, False): 0.72, ("540p", "10s", False, False): 1.44,
    ("720p", "5s", False, False): 1.08, ("720p", "10s", False, False): 2.16,
    ("1080p", "5s", False, False): 2.16, ("1080p", "10s", False, False): 4.32,
    ("720p", "5s", True, False): 2.16, ("720p", "10s", True, False): 4.32,
    ("1080p", "5s", True, False): 4.32, ("1080p", "10s", True, False): 8.64,
    ("720p", "5s", True, True): 3.24, ("720p", "10s", True, True): 6.48,
    ("1080p", "5s", True, True): 6.48, ("1080p", "10s", True, True): 12.96,
}  # fmt: skip

# Luma Agents API pay-as-you-go generation prices (generative-media-skills 2026-07-10;
# Runware and Comfy's partner table agree). fal's 2026-10-08 image-to-video card shows the
# same $0.15 at 540p/5s, so fal now passes these through.
_GENERATION: Grid = {
    ("540p", "5s", False, False): 0.15, ("540p", "10s", False, False): 0.45,
    ("720p", "5s", False, False): 0.30, ("720p", "10s", False, False): 0.90,
    ("1080p", "5s", False, False): 1.20, ("1080p", "10s", False, False): 3.60,
    ("720p", "5s", True, False): 0.60, ("1080p", "5s", True, False): 2.40,
    ("720p", "5s", True, True): 0.90, ("1080p", "5s", True, True): 3.60,
}  # fmt: skip

# fal's reframe card: per started source second.
_REFRAME_PER_SECOND = {"540p": 0.06, "720p": 0.12, "1080p": 0.36}


def _grid_rows(
    endpoint: str, grid: Grid, source: str, date: str, durations: Sequence[str] = ("5s", "10s")
) -> list[Price]:
    return [
        Price(
            endpoint,
            usd,
            when={"resolution": res, "duration": dur, "hdr": hdr, "exr_export": exr},
            source=source,
            date=date,
        )
        for (res, dur, hdr, exr), usd in grid.items()
        if dur in durations
    ]


PRICES: tuple[Price, ...] = (
    *_grid_rows(VIDEO_TO_VIDEO, _EDIT, "fal video-to-video card", "2026-10-08"),
    *_grid_rows(
        TEXT_TO_VIDEO,
        _GENERATION,
        "estimate: fal prices text-to-video dynamically; Luma Agents API pay-as-you-go",
        "2026-07-10",
    ),
    *_grid_rows(
        IMAGE_TO_VIDEO,
        _GENERATION,
        "fal image-to-video card for 540p/5s ($0.15, 2026-10-08); other cells: Luma Agents"
        " API pay-as-you-go generation prices, which that cell matches",
        "2026-10-08",
        durations=("5s",),
    ),
    *(
        Price(REFRAME, usd, "source_second", {"resolution": res}, "fal reframe card")
        for res, usd in _REFRAME_PER_SECOND.items()
    ),
    Price(TEXT_TO_IMAGE, 0.042, source="fal Uni-1 text-to-image card"),
    Price(EDIT_IMAGE, 0.042, source="fal Uni-1 edit card"),
    Price(EDIT_IMAGE, 0.003, "input_image", source="fal Uni-1 edit card"),
)


class PriceOverride(Strict):
    """A manifest's price row (``prices: {endpoint: {usd: 0.5, per: job, when: {...}}}``)."""

    usd: NonNegativeFloat
    """The price in USD."""
    per: Per = "job"
    """What it multiplies: each job, each started source second, or each input image."""
    when: dict[str, Any] = {}
    """Input field -> value this row is limited to (first matching row wins)."""


class PriceTable:
    """The rows by endpoint; ``estimate`` prices one job."""

    def __init__(self, rows: Iterable[Price]) -> None:
        self._rows: dict[str, list[Price]] = {}
        for row in rows:
            self._rows.setdefault(row.endpoint, []).append(row)

    def rows(self, endpoint: str) -> list[Price]:
        """The rows that price ``endpoint`` (empty: its cost is unknown)."""
        return self._rows.get(endpoint, [])

    def with_overrides(self, overrides: Mapping[str, Sequence[PriceOverride]]) -> PriceTable:
        """A copy in which each overridden endpoint's rows are replaced by the manifest's."""
        table = PriceTable(())
        table._rows = dict(self._rows)
        for endpoint, rows in overrides.items():
            table._rows[endpoint] = [
                Price(endpoint, row.usd, row.per, row.when, "manifest") for row in rows
            ]
        return table

    def estimate(
        self, endpoint: str, arguments: Mapping[str, Any], source_seconds: float | None = None
    ) -> float | None:
        """The USD a job should cost, or None when no row prices it or its length is unknown."""
        rows = [row for row in self.rows(endpoint) if row.matches(arguments)]
        base = next((row for row in rows if row.per != "input_image"), None)
        if base is None:
            return None
        if base.per == "source_second":
            if source_seconds is None:
                return None
            total = base.usd * math.ceil(max(source_seconds - _SECOND_TOLERANCE, 0.0))
        else:
            total = base.usd
        images = _input_images(endpoint, arguments)
        total += sum(row.usd * images for row in rows if row.per == "input_image")
        return round(total, 6)


def _input_images(endpoint: str, arguments: Mapping[str, Any]) -> int:
    spec = spec_for(endpoint)
    count = 0
    for name, value in arguments.items():
        if spec.media_kind(name) == "image":
            count += len(value) if isinstance(value, list) else 1
    return count


DEFAULT_PRICES = PriceTable(PRICES)


def estimate_cost(
    endpoint: str,
    arguments: Mapping[str, Any],
    media_info: MediaInfo | None = None,
    *,
    table: PriceTable = DEFAULT_PRICES,
) -> float | None:
    """The estimated USD of one job; ``media_info`` is its source's (for per-second prices)."""
    seconds = media_info.duration if media_info is not None else None
    return table.estimate(endpoint, arguments, seconds)
