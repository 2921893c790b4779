"""What a job is expected to cost, as one table of cited rows (USD).

A row prices a job when every field in its ``when`` equals the job's argument. Its ``per``
says what it multiplies: a flat ``job``, each started ``source_second`` (reframe bills the
source's length, rounded up), or each ``input_image`` (Uni-1 edit bills source and
reference images). A job costs its first matching ``job``/``source_second`` row plus every
matching ``input_image`` row; no matching base row means the cost is unknown.

Every row carries its source and the date that source said it. fal's own model pages win
over third parties; a cell fal does not publish is an *estimate*, and its row says from what.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import NonNegativeFloat

from runner.endpoints._base import Strict
from runner.endpoints._cite import (
    FAL_I2V,
    FAL_REFRAME,
    FAL_UNI_EDIT,
    FAL_UNI_T2I,
    FAL_V2V,
    LUMA_PRICING,
    Cite,
)
from runner.endpoints._registry import (
    EDIT_IMAGE,
    ENDPOINTS,
    IMAGE_TO_VIDEO,
    REFRAME,
    TEXT_TO_IMAGE,
    TEXT_TO_VIDEO,
    VIDEO_TO_VIDEO,
    spec_for,
)

if TYPE_CHECKING:
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
    note: str = ""
    user: bool = False

    def matches(self, arguments: Mapping[str, Any]) -> bool:
        """Whether every ``when`` field equals the job's argument."""
        return all(arguments.get(name) == value for name, value in self.when.items())


# (resolution, duration, hdr, exr_export) -> USD
Grid = Mapping[tuple[str, str, bool, bool], float]

# fal's video-to-video page, every cell published (read 2026-12-04; the same figures as
# the third-party estimators of 2026-10-08).
_EDIT: Grid = {
    ("540p", "5s", False, False): 0.72, ("540p", "10s", False, False): 1.44,
    ("720p", "5s", False, False): 1.08, ("720p", "10s", False, False): 2.16,
    ("1080p", "5s", False, False): 2.16, ("1080p", "10s", False, False): 4.32,
    ("720p", "5s", True, False): 2.16, ("720p", "10s", True, False): 4.32,
    ("1080p", "5s", True, False): 4.32, ("1080p", "10s", True, False): 8.64,
    ("720p", "5s", True, True): 3.24, ("720p", "10s", True, True): 6.48,
    ("1080p", "5s", True, True): 6.48, ("1080p", "10s", True, True): 12.96,
}  # fmt: skip

# fal's image-to-video page (read 2026-12-04): 5s $0.50 / $1 / $2, 10s double. raybatch's
# seed priced 540p/5s at $0.15, Luma's direct price carried over from a third party.
_GENERATION: Grid = {
    ("540p", "5s", False, False): 0.50, ("540p", "10s", False, False): 1.00,
    ("720p", "5s", False, False): 1.00, ("720p", "10s", False, False): 2.00,
    ("1080p", "5s", False, False): 2.00, ("1080p", "10s", False, False): 4.00,
}  # fmt: skip

# fal publishes no HDR price for generation: estimated as fal prices HDR edits, 2x the SDR
# cell with HDR and 3x with HDR + EXR (fal's video-to-video page; Luma's direct prices keep
# the same ratios).
_HDR_FACTOR = {(True, False): 2.0, (True, True): 3.0}
_GENERATION_HDR: Grid = {
    (res, dur, hdr, exr): round(_GENERATION[(res, dur, False, False)] * factor, 6)
    for res in ("720p", "1080p")
    for dur in ("5s", "10s")
    for (hdr, exr), factor in _HDR_FACTOR.items()
}

# fal's reframe page: per started source second.
_REFRAME_PER_SECOND = {"540p": 0.06, "720p": 0.12, "1080p": 0.36}

_HDR_NOTE = (
    "estimate: fal publishes no HDR price for generation; 2x the SDR cell, 3x with EXR,"
    " as fal's video-to-video page prices HDR edits"
)
_T2V_NOTE = (
    "estimate: fal prices text-to-video dynamically and publishes no card; Luma prices text-"
    f" and image-to-video as one generation type ({LUMA_PRICING.source}), so fal's"
    " image-to-video card stands in"
)


def _grid_rows(
    endpoint: str,
    grid: Grid,
    cite: Cite,
    note: str = "",
    durations: Sequence[str] = ("5s", "10s"),
) -> list[Price]:
    return [
        Price(
            endpoint,
            usd,
            when={"resolution": res, "duration": dur, "hdr": hdr, "exr_export": exr},
            source=cite.source,
            date=cite.date,
            note=note,
        )
        for (res, dur, hdr, exr), usd in grid.items()
        if dur in durations
    ]


def _cited(cite: Cite) -> tuple[str, str]:
    return cite.source, cite.date


def _flat(endpoint: str, usd: float, cite: Cite, per: Per = "job", note: str = "") -> Price:
    return Price(endpoint, usd, per, {}, cite.source, cite.date, note)


PRICES: tuple[Price, ...] = (
    *_grid_rows(VIDEO_TO_VIDEO, _EDIT, FAL_V2V),
    *_grid_rows(IMAGE_TO_VIDEO, _GENERATION, FAL_I2V),
    # 10s HDR image-to-video exists with keyframes only; the rules refuse the rest.
    *_grid_rows(IMAGE_TO_VIDEO, _GENERATION_HDR, FAL_I2V, _HDR_NOTE),
    *_grid_rows(TEXT_TO_VIDEO, _GENERATION, FAL_I2V, _T2V_NOTE),
    # HDR text-to-video is 5s only.
    *_grid_rows(TEXT_TO_VIDEO, _GENERATION_HDR, FAL_I2V, _T2V_NOTE, durations=("5s",)),
    *(
        Price(REFRAME, usd, "source_second", {"resolution": res}, *_cited(FAL_REFRAME))
        for res, usd in _REFRAME_PER_SECOND.items()
    ),
    _flat(TEXT_TO_IMAGE, 0.042, FAL_UNI_T2I),
    _flat(EDIT_IMAGE, 0.042, FAL_UNI_EDIT),
    _flat(EDIT_IMAGE, 0.003, FAL_UNI_EDIT, "input_image", "per reference or source image"),
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

    def with_overrides(
        self, overrides: Mapping[str, Sequence[PriceOverride]], cite: Cite
    ) -> PriceTable:
        """A copy in which each overridden endpoint's rows are replaced by the user's,
        marked as theirs and cited to ``cite`` (their file and its date)."""
        table = PriceTable(())
        table._rows = dict(self._rows)
        for endpoint, rows in overrides.items():
            table._rows[endpoint] = [
                Price(endpoint, row.usd, row.per, row.when, cite.source, cite.date, user=True)
                for row in rows
            ]
        return table

    def endpoints(self) -> list[str]:
        """Every endpoint with at least one row."""
        return list(self._rows)

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
        # A pass-through endpoint's media fields are of any kind: each counts as an input.
        if spec.media_kind(name) in ("image", "any"):
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


def unpriced_refusal(counts: Mapping[str, int]) -> str:
    """Why a budget (``--max-cost``, ``max_cost:``) cannot be checked: per endpoint, how
    many remaining jobs have no price, and what gives them one."""
    parts = []
    for endpoint, count in sorted(counts.items()):
        if endpoint in ENDPOINTS:
            why = (
                "no price row matches their input, or their source's length is unknown"
                " (reframe bills source seconds: use a local file or --probe-remote)"
            )
        else:
            why = "add a prices: row for it (in the manifest or a --prices file)"
        parts.append(f"{endpoint}: {count} job(s) without a price; {why}")
    return "--max-cost cannot cover jobs without a price, so nothing was submitted: " + "; ".join(
        parts
    )
