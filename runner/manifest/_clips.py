"""Per source: what it is, what its jobs render and bill, and what to know before paying.

``Renders`` counts each source's jobs while they are made and turns them, with the
planner's measurements, into one ``ClipFacts`` per source with jobs (``plan --clips``).
``source_warnings`` is the one place that decides the warnings, so that a later change
(long clips rendered in segments instead of trimmed) changes them here only:

- *trimmed*: a clip longer than the requested ``duration`` (fal renders that much; what it
  does with the rest is not documented, shared/reference/luma.md §2c, 2026-12-04);
- *billed up*: a clip shorter than ``duration`` is billed for the whole slot (fal sells
  5 s and 10 s; "a 3 s clip still costs the 5 s slot", recast via luma.md §2c);
- *rotated*: a display rotation (phone footage) is not applied to what is uploaded (the
  file goes as stored; sending it upright needs a local re-encode, a later step);
- *sound dropped*: Ray 3.2 renders silent video (runware.ai's Ray 3.2 guide, luma.md
  update of 2026-12-04);
- *aspect changed*: a still whose shape differs from ``aspect_ratio`` (image-to-video
  defaults to 16:9, fal's page 2026-12-04);
- *truncated*: a file whose last frames do not decode (``with_decode_checks`` only: it
  decodes them).

A fact not measured (a remote clip not probed) is None, shown as not measured.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import media
from ..endpoints import EndpointSpec, PriceTable
from ..plan import ClipFacts, ClipRender

if TYPE_CHECKING:
    from ..media import MediaInfo
    from ._types import Source

#: Container durations carry rounding noise: a 5 s clip may read 5.02 s.
LENGTH_TOLERANCE = 0.05
#: A still within 2 % of the output's shape is not "changed".
ASPECT_TOLERANCE = 0.02


@dataclass
class _Group:
    """A source's jobs on one endpoint with one requested length and shape."""

    spec: EndpointSpec
    arguments: Mapping[str, Any]
    input_key: tuple[object, ...]  # names the distinct input (its manifest places)
    jobs: int = 0
    usd: float | None = 0.0
    #: A long clip cut into renders: what is rendered, and whether its sound is kept.
    cut: tuple[str, bool] | None = None


class Renders:
    """What each source's jobs render, counted while the jobs are made (per matrix
    combination, not per job: a 100k-job plan has a few thousand)."""

    def __init__(self) -> None:
        self._by_source: dict[str, dict[tuple[str, Any, Any], _Group]] = {}

    def add(
        self,
        source_id: str,
        spec: EndpointSpec,
        arguments: Mapping[str, Any],
        input_key: tuple[object, ...],
        jobs: int,
        usd: float | None,
        cut: tuple[str, bool] | None = None,
    ) -> None:
        """Count ``jobs`` more of the source's jobs of one validated input (``arguments``,
        named by ``input_key``), each of ``usd`` (None: unpriced); ``cut``: they are a long
        clip cut into renders (what is rendered, whether the sound is kept)."""
        length = cut[0] if cut is not None else arguments.get("duration")
        key = (spec.id, length, arguments.get("aspect_ratio"))
        found = self._by_source.setdefault(source_id, {})
        group = found.get(key)
        if group is None:
            group = found[key] = _Group(spec, arguments, input_key, cut=cut)
        group.jobs += jobs
        group.usd = None if usd is None or group.usd is None else group.usd + usd * jobs

    def facts(
        self,
        sources: Mapping[str, Source],
        media_by_source: Mapping[str, Mapping[str, MediaInfo | None]],
        prices: PriceTable,
    ) -> list[ClipFacts]:
        """One ``ClipFacts`` per source with jobs, in manifest order (``prices``: the table
        the jobs were priced with, for what each is billed by)."""
        facts = []
        # What an input is billed by is found once per distinct input, not once per source.
        billed: dict[tuple[object, ...], str | None] = {}
        for clip, by_key in self._by_source.items():
            source = sources[clip]
            info = None
            for measured_info in media_by_source.get(clip, {}).values():
                info = info or measured_info
            renders, warnings = [], []
            for group in by_key.values():
                key = group.input_key
                if key not in billed:
                    billed[key] = _billed_per(prices, group.spec.id, group.arguments)
                per = billed[key]
                renders.append(_render(group, info, per))
                warned = source_warnings(info, source.kind, group.spec, group.arguments, group.cut)
                for warning in warned:
                    if warning not in warnings:
                        warnings.append(warning)
            facts.append(_facts(source, info, renders, warnings))
        return facts


def _facts(
    source: Source, info: MediaInfo | None, renders: list[ClipRender], warnings: list[str]
) -> ClipFacts:
    if info is None:
        return ClipFacts(
            source.id, source.shown, source.kind, None, None, None, None, None, None,
            tuple(renders), tuple(warnings),
        )  # fmt: skip
    video = info.kind == "video"
    return ClipFacts(
        source.id,
        source.shown,
        source.kind,
        info.duration,
        info.upright_width,
        info.upright_height,
        info.fps,
        info.rotation if video else None,
        info.has_audio if video else None,
        tuple(renders),
        tuple(warnings),
    )


def _seconds(duration: Any) -> float | None:
    """``"5s"`` as 5.0; None for anything else."""
    if isinstance(duration, str) and duration.endswith("s"):
        try:
            return float(duration[:-1])
        except ValueError:
            return None
    return None


def _render(group: _Group, info: MediaInfo | None, per: str | None) -> ClipRender:
    """What the group's jobs render of the source and what fal bills for it."""
    requested = group.arguments.get("duration")
    slot = _seconds(requested)
    length = info.duration if info is not None else None
    if group.cut is not None:
        shown = f"all {length:.1f} s as " if length is not None else ""
        return ClipRender(
            group.spec.id, group.jobs, shown + group.cut[0], "per render, look and start frame",
            group.usd if group.usd is None else round(group.usd, 6),
        )  # fmt: skip
    if info is None or info.kind == "image":
        rendered = f"a {requested} clip from the still" if slot else "one output"
    elif length is None:
        rendered = "the clip (length not measured)"
    elif slot is not None:
        rendered = f"{min(length, slot):.1f} s of {length:.1f} s"
    else:
        rendered = f"all {length:.1f} s"
    if per == "source_second":
        billed = f"{math.ceil(length - 0.01)} started second(s)" if length else "per second"
    elif per == "job":
        billed = f"as {requested}" if slot else "per job"
    else:
        billed = "no price known"
    return ClipRender(group.spec.id, group.jobs, rendered, billed, group.usd)


def _billed_per(prices: PriceTable, endpoint: str, arguments: Mapping[str, Any]) -> str | None:
    """What the job's price row multiplies (job, source second), or None: no row."""
    rows = [r for r in prices.rows(endpoint) if r.per != "input_image" and r.matches(arguments)]
    return rows[0].per if rows else None


def source_warnings(
    info: MediaInfo | None,
    kind: str,
    spec: EndpointSpec,
    arguments: Mapping[str, Any],
    cut: tuple[str, bool] | None = None,
) -> list[str]:
    """What a user must know before paying for ``spec`` jobs of this source (see the
    module docstring for each warning and its source). A long clip ``cut`` into renders
    is rendered whole, upright (each segment is prepared upright), and its stitch carries
    the sound unless ``cut`` says it does not."""
    if info is None:
        return []
    if cut is not None:
        if kind == "video" and info.has_audio and not cut[1]:
            return ["sound dropped: segments.audio is none; the stitched file is silent"]
        return []
    found = []
    slot = _seconds(arguments.get("duration"))
    requested = arguments.get("duration")
    if kind == "video" and info.duration is not None and slot is not None:
        if info.duration > slot + LENGTH_TOLERANCE:
            found.append(
                f"trimmed: {info.duration:.1f} s clip with duration {requested}: fal renders"
                f" {slot:g} s and the last {info.duration - slot:.1f} s are lost"
            )
        elif info.duration < slot - LENGTH_TOLERANCE:
            found.append(
                f"billed up: {info.duration:.1f} s clip billed as {requested} (fal sells"
                " 5 s and 10 s renders)"
            )
    if kind == "video" and info.rotation:
        found.append(
            f"rotated: stored {info.width}×{info.height}, shown turned {info.rotation}°"
            " clockwise; it is uploaded as stored, so the render may come back sideways"
            " (re-export it upright)"
        )
    if kind == "video" and info.has_audio and spec.output_kind == "video":
        found.append("sound dropped: Ray 3.2 renders silent video; the source's audio is lost")
    aspect = arguments.get("aspect_ratio")
    if kind == "image" and isinstance(aspect, str) and info.width and info.height:
        found.extend(_aspect_warning(info.width, info.height, aspect, spec))
    return found


def _ratio(text: str) -> float | None:
    width, _, height = text.partition(":")
    try:
        return float(width) / float(height)
    except (ValueError, ZeroDivisionError):
        return None


def _aspect_warning(width: int, height: int, aspect: str, spec: EndpointSpec) -> list[str]:
    target = _ratio(aspect)
    shape = width / height
    if target is None or abs(shape / target - 1) <= ASPECT_TOLERANCE:
        return []
    choices = _aspect_choices(spec)
    nearest = min(choices, key=lambda c: abs(math.log(shape / (_ratio(c) or 1.0))), default=None)
    better = (
        f"; aspect_ratio: '{nearest}' keeps its shape"
        if nearest is not None and nearest != aspect
        else ""
    )
    return [
        f"aspect changed: {width}×{height} still ({shape:.2f}:1) comes back {aspect}"
        f" (aspect_ratio {aspect}){better}"
    ]


def _aspect_choices(spec: EndpointSpec) -> list[str]:
    """The ratios the endpoint's ``aspect_ratio`` field accepts (its Literal's values)."""
    model = spec.input_model
    found = model.model_fields.get("aspect_ratio") if model is not None else None
    if found is None:
        return []
    args: list[str] = []
    for arg in typing.get_args(found.annotation) or (found.annotation,):
        args.extend(a for a in typing.get_args(arg) if isinstance(a, str))
        if isinstance(arg, str):
            args.append(arg)
    return [a for a in args if _ratio(a) is not None]


def with_decode_checks(facts: list[ClipFacts], base_dir: Path) -> list[ClipFacts]:
    """``facts`` with a *truncated* warning for each local clip whose last frames do not
    decode (slow: it decodes the last seconds of each)."""
    checked = []
    for fact in facts:
        problem = None
        if fact.kind == "video" and "://" not in fact.path:
            try:
                problem = media.decode_problem(base_dir / fact.path)
            except media.MediaError as exc:
                problem = exc.reason
        if problem:
            fact = replace(fact, warnings=(*fact.warnings, f"truncated: {problem}"))
        checked.append(fact)
    return checked
