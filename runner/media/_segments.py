"""How a clip is cut into renders fal accepts: pure arithmetic, no I/O.

fal's Ray 3.2 video-to-video renders and bills exactly 5 s or 10 s (``duration: 5s|10s``;
fal's model page and schema, read 2026-10-08, see shared/reference/luma.md), and what it
does with a source longer than the requested duration is not documented. So every
segment sent is exactly 5 s or 10 s of source, and a cover that does not divide evenly
ends with a segment pulled back to end at the source's end: it overlaps the one before,
and the stitch keeps each source frame from exactly one segment.

Everything is counted in frames of one constant rate (``planning_rate``), the rate
``cut_segment`` prepares segments at, so that 5 s is a whole number of frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

RenderLength = Literal["5s", "10s", "auto"]
#: The render lengths fal's video-to-video accepts, in seconds (see the module docstring).
RENDER_SECONDS = (5, 10)
#: The highest rate segments are prepared at: more frames than this only cost upload bytes.
MAX_RATE = 60
#: The price of one render of that many seconds (at the resolution being planned).
Price = Callable[[int], float]


def planning_rate(fps: float) -> int:
    """The constant frame rate a clip at ``fps`` is planned and prepared at.

    The whole number at or just above ``fps`` (29.97 → 30, 23.976 → 24, 12.5 → 13), at most
    ``MAX_RATE``: 5 s is then a whole number of frames, and since it is never below the
    source's rate no source frame is dropped; one is shown twice every 1 / (rate − fps) s.
    """
    if not fps > 0:
        raise ValueError(f"a frame rate must be positive, not {fps}")
    return max(1, min(MAX_RATE, math.ceil(fps - 0.01)))


@dataclass(frozen=True, slots=True)
class Segment:
    """One render: which source frames go in, how long fal renders, which frames are kept.

    Frame numbers count frames at ``rate`` from the start of the source. The stitch takes
    frames ``keep_first``..``keep_end - 1`` from this segment. A segment is always kept from
    its own first frame, and where two overlap the earlier one's tail is what is dropped:
    a render's opening frames are the ones steered by its start image, and a file cut short
    at its end can often be copied, where one cut at its head must be re-encoded. The first
    ``blend_frames`` kept frames were rendered by the previous segment too, and may be
    blended from it into this one.
    """

    index: int
    rate: int
    first: int
    frames: int
    #: What fal renders and bills: 5 or 10.
    seconds: int
    keep_first: int
    keep_end: int
    blend_frames: int = 0
    #: The whole source is shorter than the shortest render: sent as it is, billed as 5 s.
    billed_short: bool = False
    #: The segment opens a shot (``cuts``): nothing before it is the same picture.
    starts_shot: bool = False

    def at(self, frame: int) -> Fraction:
        """The exact moment of source frame ``frame`` (counted at this segment's rate)."""
        return Fraction(frame, self.rate)

    @property
    def end(self) -> int:
        """One past the last source frame rendered."""
        return self.first + self.frames

    @property
    def duration(self) -> str:
        """The ``duration`` argument fal is sent: "5s" or "10s"."""
        return f"{self.seconds}s"

    @property
    def start_time(self) -> float:
        """Where the rendered span starts in the source, in seconds."""
        return self.first / self.rate

    @property
    def end_time(self) -> float:
        """Where the rendered span ends in the source, in seconds."""
        return self.end / self.rate

    @property
    def keep_start_time(self) -> float:
        """Where the kept span starts in the source (the seam before it), in seconds."""
        return self.keep_first / self.rate

    @property
    def keep_end_time(self) -> float:
        """Where the kept span ends in the source (the seam after it), in seconds."""
        return self.keep_end / self.rate


@dataclass(frozen=True, slots=True)
class SegmentPlan:
    """The segments of one clip, in order, with what they cost and why they look so."""

    rate: int
    frames: int
    segments: tuple[Segment, ...]
    #: The price of all renders, when a price function was given.
    cost: float | None
    #: Plain sentences for ``plan``: merges, fallbacks, overlaps, short sources.
    notes: tuple[str, ...]

    @property
    def rendered_seconds(self) -> int:
        """The seconds fal renders and bills over all segments."""
        return sum(segment.seconds for segment in self.segments)

    @property
    def seams(self) -> tuple[float, ...]:
        """Where one segment hands over to the next, in source seconds."""
        return tuple(segment.keep_start_time for segment in self.segments[1:])


@dataclass(frozen=True, slots=True)
class _Span:
    first: int
    end: int
    after_cut: bool


def plan_segments(
    duration: float,
    fps: float,
    *,
    length: RenderLength = "auto",
    cuts: Sequence[float] = (),
    overlap_frames: int = 0,
    min_segment_seconds: float | None = None,
    price: Price | None = None,
) -> SegmentPlan:
    """Cut a clip of ``duration`` seconds at ``fps`` into renders of exactly 5 s or 10 s.

    ``length`` "auto" takes the cheapest cover under ``price`` (ties: fewer segments, then
    fewer rendered seconds). With ``cuts`` (shot changes, seconds) no segment crosses a
    cut, except where a shot shorter than ``min_segment_seconds`` (at least 5 s) had to
    join a neighbour. ``overlap_frames`` are rendered by both segments at every seam inside
    a shot. A source shorter than 5 s is one segment, sent whole and billed as 5 s.
    """
    rate = planning_rate(fps)
    total = round(duration * rate)
    if total < 1:
        raise ValueError(f"a {duration} s clip has no frame to render")
    if length not in ("5s", "10s", "auto"):
        raise ValueError(f"length must be 5s, 10s or auto, not {length!r}")
    if length == "auto" and price is None:
        raise ValueError("length auto needs a price function to find the cheapest cover")
    shortest = min(RENDER_SECONDS) * rate
    if not 0 <= overlap_frames < shortest // 2:
        raise ValueError(f"overlap_frames must be between 0 and {shortest // 2 - 1}")
    notes: list[str] = []
    if total < shortest:
        notes.append(
            f"{total / rate:.2f} s is shorter than fal's shortest render:"
            f" sent as it is and billed as {min(RENDER_SECONDS)} s"
        )
        only = Segment(0, rate, 0, total, min(RENDER_SECONDS), 0, total, billed_short=True)
        return _finish(rate, total, [only], price, notes)
    minimum = max(shortest, round((min_segment_seconds or 0) * rate))
    lengths = RENDER_SECONDS if length == "auto" else (int(length[:-1]),)
    segments: list[Segment] = []
    for span in _shots(total, rate, cuts, minimum, notes):
        usable = tuple(s for s in lengths if s * rate <= span.end - span.first)
        if not usable:
            usable = (min(RENDER_SECONDS),)
            notes.append(
                f"{_at(span.first, rate)}–{_at(span.end, rate)} is shorter than {length}:"
                f" rendered as {usable[0]} s segments"
            )
        segments.extend(_cover(span, rate, usable, overlap_frames, price, len(segments), notes))
    return _finish(rate, total, segments, price, notes)


def _finish(
    rate: int, total: int, segments: list[Segment], price: Price | None, notes: list[str]
) -> SegmentPlan:
    cost = None if price is None else sum(price(segment.seconds) for segment in segments)
    return SegmentPlan(rate, total, tuple(segments), cost, tuple(notes))


def _at(frame: int, rate: int) -> str:
    return f"{frame / rate:.2f} s"


def _shots(
    total: int, rate: int, cuts: Sequence[float], minimum: int, notes: list[str]
) -> list[_Span]:
    """The spans between cuts, a span shorter than ``minimum`` merged into a neighbour."""
    points = sorted({round(cut * rate) for cut in cuts if 0 < round(cut * rate) < total})
    edges = [0, *points, total]
    spans = [[start, end] for start, end in zip(edges, edges[1:], strict=False)]
    while len(spans) > 1:
        short = [i for i, (start, end) in enumerate(spans) if end - start < minimum]
        if not short:
            break
        i = min(short, key=lambda k: (spans[k][1] - spans[k][0], k))
        if i == 0:
            other = 1
        elif i == len(spans) - 1:
            other = i - 1
        else:
            before, after = spans[i - 1], spans[i + 1]
            other = i + 1 if after[1] - after[0] < before[1] - before[0] else i - 1
        low, high = sorted((i, other))
        notes.append(
            f"the shot at {_at(spans[i][0], rate)}–{_at(spans[i][1], rate)} is shorter than"
            f" {minimum / rate:g} s: joined with the {'next' if other > i else 'previous'} one"
        )
        spans[low : high + 1] = [[spans[low][0], spans[high][1]]]
    return [_Span(start, end, start > 0) for start, end in spans]


def _cover(
    span: _Span,
    rate: int,
    lengths: tuple[int, ...],
    overlap: int,
    price: Price | None,
    index: int,
    notes: list[str],
) -> list[Segment]:
    """The cheapest exact-length cover of one span (one length: the fewest segments)."""
    best: tuple[tuple[float, int, int], list[int], list[int]] | None = None
    for order in _orders(span.end - span.first, rate, lengths, overlap):
        firsts = _place(span, rate, order, overlap)
        if firsts is None:
            continue
        cost = sum(price(seconds) for seconds in order) if price is not None else 0.0
        # Costs are sums of floats: equal covers must compare equal.
        key = (round(cost, 9), len(order), sum(order))
        if best is None or key < best[0]:
            best = (key, order, firsts)
    if best is None:  # unreachable for a span of at least one render
        raise ValueError(f"no exact cover for {span.end - span.first} frames")
    _, order, firsts = best
    ends = [*firsts[1:], span.end]
    segments = [
        Segment(
            index + position,
            rate,
            first,
            seconds * rate,
            seconds,
            first,
            keep_end,
            overlap if position else 0,
            starts_shot=span.after_cut and not position,
        )
        for position, (first, seconds, keep_end) in enumerate(zip(firsts, order, ends, strict=True))
    ]
    if len(segments) > 1:
        extra = segments[-2].end - segments[-1].first - overlap
        if extra > 0:
            notes.append(
                f"the segment at {_at(segments[-1].first, rate)} overlaps the one before by"
                f" {extra / rate:.2f} s more than asked, to render exactly"
                f" {segments[-1].seconds} s; those frames are kept from the later one"
            )
    return segments


def _orders(size: int, rate: int, lengths: tuple[int, ...], overlap: int) -> list[list[int]]:
    """Candidate covers of ``size`` frames: render lengths in order, longest first."""
    if len(lengths) == 1:
        step = lengths[0] * rate - overlap
        return [[lengths[0]] * max(1, math.ceil((size - overlap) / step))]
    long, short = max(lengths), min(lengths)
    long_step, short_step = long * rate - overlap, short * rate - overlap
    orders = []
    for longs in range(size // long_step + 2):
        shorts = max(0, math.ceil((size - overlap - longs * long_step) / short_step))
        if longs + shorts:
            orders.append([long] * longs + [short] * shorts)
    return orders


def _place(span: _Span, rate: int, order: list[int], overlap: int) -> list[int] | None:
    """Where each segment of ``order`` starts; the last is pulled back to end at the end.

    None when the order does not fit: a segment before the last would run past the end,
    or the last would not reach past the one before (it would render nothing new).
    """
    firsts: list[int] = []
    position = span.first
    for seconds in order[:-1]:
        firsts.append(position)
        position += seconds * rate - overlap
    last = span.end - order[-1] * rate
    if last < span.first:
        return None
    if firsts:
        previous_end = firsts[-1] + order[-2] * rate
        if previous_end > span.end or last > previous_end - overlap or last <= firsts[-1]:
            return None
    firsts.append(last)
    return firsts
