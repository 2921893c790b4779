"""Which video-to-video clips are cut into renders, and how: the segment plan of one clip
for one group × matrix combination, checked against the endpoint and priced.

A local clip longer than its render length is cut (``media.plan_segments``): a
``duration:`` in the input sets the length, else ``segments.length`` (``auto``: the
cheapest exact cover by the price table). A clip that fits one render stays one job
(``Single`` when that render is of another length than the input asks, e.g. a 10 s clip
without ``duration:`` rendered as one 10 s render). See ``_long`` for the jobs a cut clip
becomes.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .. import media
from ..endpoints import EDIT_IMAGE, VIDEO_TO_VIDEO, Loc, PriceTable, format_loc, spec_for
from ..media import RenderLength, SegmentPlan, plan_segments
from ._models import Segments
from ._types import STAND_IN_FILE, STAND_IN_PROMPT, Combo, Group, Layer, Source

if TYPE_CHECKING:
    from ..media import MediaInfo
    from ._planner import Planner

#: A segment's start frame and the look are Uni-1 edits (fal's ``luma/agent/uni-1/v1/edit``).
EDIT = EDIT_IMAGE
START_IMAGE = "start_image_url"


@dataclass(frozen=True, slots=True)
class Cutting:
    """How one clip is cut for one group × matrix combination."""

    source: Source
    info: MediaInfo
    settings: Segments
    loc: Loc
    plan: SegmentPlan
    #: Why it is cut so (shot changes, the cheaper cover), for ``plan``.
    why: tuple[str, ...] = ()
    #: What one stitched output costs: its renders, look and start frames (None: unpriced).
    usd: float | None = None

    @property
    def sound(self) -> bool:
        """Whether the stitched output carries the source's sound."""
        return self.settings.audio == "source" and self.info.has_audio

    @property
    def description(self) -> str:
        """What is rendered, for ``plan --clips``: ``3 renders (10s+10s+10s), anchor
        continuity, stitched with its sound``."""
        lengths = "+".join(segment.duration for segment in self.plan.segments)
        sound = "with its sound" if self.sound else "silent"
        return (
            f"{len(self.plan.segments)} renders ({lengths}), {self.settings.continuity}"
            f" continuity, stitched {sound}"
        )


@dataclass(frozen=True, slots=True)
class Single:
    """A clip that fits one render: one job as before, with this ``duration``."""

    duration: str
    cost: float | None


def settings_for(top: Segments, source: Source) -> tuple[Segments, Loc]:
    """A clip's ``segments:`` settings (its own block over the manifest's) and their place."""
    own = source.entry.segments
    if own is None:
        return top, ("segments",)
    return own.over(top), (*source.loc, "segments")


def segmentable(group: Group) -> bool:
    """Whether the group's jobs could be cut: video-to-video of a local clip."""
    source = group.source
    return (
        group.spec.id == VIDEO_TO_VIDEO
        and source is not None
        and source.kind == "video"
        and source.file is not None
    )


@functools.lru_cache(maxsize=1)
def _edit_defaults() -> tuple[tuple[str, Any], ...]:
    spec = spec_for(EDIT)
    base, issues = spec.validate({"prompt": STAND_IN_PROMPT, "image_url": STAND_IN_FILE})
    assert base is not None and not issues, issues  # the edit's own input is fixed
    return tuple((k, v) for k, v in base.items() if k not in ("prompt", "image_url"))


def edit_base() -> dict[str, Any]:
    """A Uni-1 edit's input apart from its prompt and images: the endpoint's defaults."""
    return dict(_edit_defaults())


def edit_cost(prices: PriceTable, references: int = 0) -> float | None:
    """What a Uni-1 edit of one image with ``references`` reference images costs."""
    arguments: dict[str, Any] = {**edit_base(), "prompt": STAND_IN_PROMPT}
    arguments["image_url"] = STAND_IN_FILE
    if references:
        arguments["reference_image_urls"] = [STAND_IN_FILE] * references
    return prices.estimate(EDIT, arguments, None)


class Cutter:
    """Decides, per group × matrix combination, whether and how a clip is cut (each
    clip's shot changes found once)."""

    def __init__(self, planner: Planner) -> None:
        self.planner = planner
        self.problems = planner.problems
        self.prices = planner.prices
        self._shots: dict[str, list[float] | None] = {}
        self._checked: dict[tuple[Any, ...], bool] = {}

    def cutting(
        self, group: Group, layers: Sequence[Layer], combo: Combo, info: MediaInfo | None
    ) -> Cutting | Single | None:
        """How the group's jobs of one combination render their clip: cut (``Cutting``),
        one render of another length (``Single``), or one job as before (None)."""
        source = group.source
        if combo.base is None or not segmentable(group) or source is None or info is None:
            return None
        if not info.duration or not info.fps:
            return None  # refused by the media check, which names why
        settings, loc = settings_for(self.planner.manifest.segments, source)
        asked = next((lay for lay in reversed(layers) if "duration" in lay.values), None)
        length = str(combo.base["duration"]) if asked is not None else settings.length
        # auto gives way to a duration; a length set to 5s or 10s must agree with it.
        explicit = "length" in settings.model_fields_set and settings.length != "auto"
        if asked is not None and explicit and settings.length != length:
            self.problems.add(
                (*loc, "length"),
                f"length {settings.length} disagrees with duration {length} in"
                f" {format_loc(asked.loc)}; remove one",
            )
            return None
        price = self._price(combo.base)
        if length == "auto" and price is None:
            self.problems.add(
                (*loc, "length"),
                "length auto picks the cheapest cover by the price table, which prices no"
                " 5s or 10s render of this input; set length: 5s or 10s",
                alike=("auto", loc),
            )
            return None
        cuts = self._cuts(source, settings, loc)
        if cuts is None:
            return None
        try:
            plan = plan_segments(
                info.duration,
                info.fps,
                length=length,  # type: ignore[arg-type]
                cuts=cuts,
                overlap_frames=settings.overlap,
                price=price,
            )
        except ValueError as exc:
            self.problems.add((*loc, "overlap"), str(exc), alike=("overlap", loc))
            return None
        if len(plan.segments) == 1:
            only = plan.segments[0]
            if only.billed_short or only.duration == combo.base.get("duration"):
                return None
            return Single(only.duration, self.render_price(combo.base, only.duration))
        if not self._renders_ok(group, combo, settings, loc):
            return None
        why = self._why(info, settings, length, cuts, price, plan)
        return Cutting(source, info, settings, loc, plan, why, self._usd(plan, settings))

    def _usd(self, plan: SegmentPlan, settings: Segments) -> float | None:
        """What one stitched output costs: renders, and the look and start frames its
        continuity makes (None when any of them has no price)."""
        if plan.cost is None:
            return None
        if settings.continuity == "none":
            return round(plan.cost, 6)
        later = plan.segments[1:]
        # Under chain, a later segment starts from its own start frame only at a shot change.
        starts = sum(1 for s in later if settings.continuity == "anchor" or s.starts_shot)
        look, start = edit_cost(self.prices), edit_cost(self.prices, references=1)
        if look is None or (starts and start is None):
            return None
        return round(plan.cost + look + starts * (start or 0.0), 6)

    def _price(self, base: dict[str, Any]) -> Any:
        """The price of one render of ``seconds`` at this input's resolution, or None."""
        prices = [self.render_price(base, f"{s}s") for s in (5, 10)]
        if any(price is None for price in prices):
            return None
        table = {5: prices[0], 10: prices[1]}
        return table.__getitem__

    def render_price(self, base: dict[str, Any], duration: str) -> float | None:
        """What one render of ``duration`` of this input costs (None: unpriced)."""
        return self.prices.estimate(VIDEO_TO_VIDEO, {**base, "duration": duration}, None)

    def _cuts(self, source: Source, settings: Segments, loc: Loc) -> list[float] | None:
        """The clip's shot changes for ``cut: shots`` (found once per clip), else none."""
        if settings.cut != "shots":
            return []
        assert source.file is not None
        sha = source.file.sha256
        if sha not in self._shots:
            try:
                self._shots[sha] = media.detect_shots(source.file.path)
            except media.MediaError as exc:
                self.problems.add((*loc, "cut"), f"{source.shown}: {exc.reason}")
                self._shots[sha] = None
        return self._shots[sha]

    def _renders_ok(self, group: Group, combo: Combo, settings: Segments, loc: Loc) -> bool:
        """Whether the renders' input, with their start frames, is valid for the endpoint
        (checked once per combination and continuity)."""
        base = combo.base
        assert base is not None
        source = group.source.id if group.source is not None else None
        labels = tuple(sorted(combo.labels.items()))
        cache_key = (group.loc, source, labels, settings.continuity)
        if cache_key in self._checked:
            return self._checked[cache_key]
        ok = True
        starts = settings.continuity != "none"
        if starts and START_IMAGE in base:
            self.problems.add(
                (*loc, "continuity"),
                f"continuity {settings.continuity} gives every segment its own"
                f" {START_IMAGE}; remove it from the input or set continuity: none",
                alike=("start", loc),
            )
            ok = False
        else:
            trial = {**base, "prompt": STAND_IN_PROMPT, "video_url": STAND_IN_FILE}
            if starts:
                trial[START_IMAGE] = STAND_IN_FILE
            _, issues = group.spec.validate(trial)
            for issue in issues:
                self.problems.add(
                    (*loc, "continuity"),
                    f"continuity {settings.continuity}: {issue.message}",
                    alike=("renders", loc, issue.message),
                )
            ok = not issues
        self._checked[cache_key] = ok
        return ok

    def _why(
        self,
        info: MediaInfo,
        settings: Segments,
        length: str,
        cuts: Sequence[float],
        price: Any,
        plan: SegmentPlan,
    ) -> tuple[str, ...]:
        """Why this cover: with ``auto``, what the other render lengths would cost."""
        found: tuple[str, ...] = ()
        if settings.cut == "shots":
            times = ", ".join(f"{cut:.2f}" for cut in cuts)
            found = (
                f"shot changes at {times} s: no segment crosses one"
                if cuts
                else "no shot change found: cut as fixed",
            )
        if length != "auto" or plan.cost is None:
            return found
        others = []
        lengths: tuple[RenderLength, ...] = ("5s", "10s")
        for other in lengths:
            alternative = plan_segments(
                info.duration or 0.0,
                info.fps or 24.0,
                length=other,
                cuts=cuts,
                overlap_frames=settings.overlap,
                price=price,
            )
            others.append(f"{len(alternative.segments)} × {other} ${alternative.cost or 0:.2f}")
        chosen = "+".join(segment.duration for segment in plan.segments)
        return (
            *found,
            f"length auto: {chosen} for ${plan.cost:.2f} is the cheapest exact cover"
            f" ({'; '.join(others)}; equal costs go to fewer renders)",
        )
