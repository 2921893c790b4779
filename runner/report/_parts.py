"""A long clip's parts on the review page: the stitched shot's seams, its look frame and
each segment (render, start frame, prepared cut), one click away.

A stitched output is a ``local/stitch`` job; everything it was made from are its
ancestors in the job graph. The page shows the stitch as the clip × prompt's card, with
a bar under the video marking where one segment hands over to the next (click a mark to
play from there), and a row of links to the look and to each segment's files. The
intermediate jobs get no card of their own: they are counted, and listed in their
stitch's card with their state.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ..job import LOOK, ROLE, JobSpec, split_parent_ref
from ..state import ShownRow
from ._review_cards import Links

STITCH = "local/stitch"
#: A stitch's input fields that the panel shows (as seams and links).
_PANEL_FIELDS = frozenset({"parts", "segments"})


@dataclass
class _Segment:
    """One segment of a stitched output, and the jobs that made it."""

    index: int
    start: float  # the kept span, in source seconds
    end: float
    render: JobSpec | None = None
    start_frame: JobSpec | None = None
    cut: JobSpec | None = None


@dataclass
class _Stitched:
    """A stitched output: its segments, look frame and every job below it."""

    segments: list[_Segment]
    look: JobSpec | None = None
    below: list[JobSpec] = field(default_factory=list)

    @property
    def seams(self) -> list[float]:
        """Where one segment hands over to the next, in seconds of the output."""
        origin = self.segments[0].start
        return [segment.start - origin for segment in self.segments[1:]]

    @property
    def duration(self) -> float:
        """The stitched output's length in seconds."""
        return self.segments[-1].end - self.segments[0].start


class LongClipParts:
    """Every stitched output of a plan, with the jobs it was made from."""

    def __init__(self, jobs: Iterable[JobSpec]) -> None:
        specs = list(jobs)
        by_key = {spec.key: spec for spec in specs}
        self.stitched: dict[str, _Stitched] = {}
        #: Keys of jobs shown inside a stitch's card instead of on their own.
        self.inside: set[str] = set()
        #: A job that read the clip each stitch was cut from (a cut), for grouping.
        self._sources: dict[str, JobSpec] = {}
        for spec in specs:
            if spec.endpoint == STITCH:
                found = self.stitched[spec.key] = _gather(spec, by_key)
                # A look keeps a card of its own: a person judges it there.
                self.inside.update(b.key for b in found.below if b.labels.get(ROLE) != LOOK)
                cut = next((s.cut for s in found.segments if s.cut is not None), None)
                if cut is not None:
                    self._sources[spec.key] = cut

    def source(self, spec: JobSpec) -> JobSpec | None:
        """For a stitched output, a job that reads its clip (its ``video_url`` and files
        name the clip); None for any other job."""
        return self._sources.get(spec.key)

    @staticmethod
    def hidden(spec: JobSpec) -> frozenset[str]:
        """Input fields the panel shows better than the parameter list."""
        return _PANEL_FIELDS if spec.endpoint == STITCH else frozenset()

    def panel(self, spec: JobSpec, rows: Mapping[str, ShownRow], links: Links) -> str:
        """The seams bar and the parts row of a stitch's card ("" for any other job)."""
        found = self.stitched.get(spec.key)
        if found is None:
            return ""
        duration = max(found.duration, 1e-9)
        marks = "".join(
            f'<button type="button" class="seam" style="left:{100 * seam / duration:.3f}%"'
            f' data-t="{seam:.3f}" title="seam at {seam:.2f} s"></button>'
            for seam in found.seams
        )
        parts = ['<div class="parts">']
        if found.look is not None:
            parts.append(_link(found.look, rows, links, "look"))
        for segment in found.segments:
            title = f"segment {segment.index}: {segment.start:.2f}–{segment.end:.2f} s"
            shown = [_link(segment.render, rows, links, f"seg {segment.index}", title)]
            if segment.start_frame is not None:
                shown.append(
                    _link(segment.start_frame, rows, links, "start", f"{title}, start frame")
                )
            if segment.cut is not None:
                shown.append(_link(segment.cut, rows, links, "source", f"{title}, prepared source"))
            parts.append(f'<span class="segment">{"".join(shown)}</span>')
        parts.append("</div>")
        seams = ", ".join(f"{seam:.2f}" for seam in found.seams)
        costs = [below.estimated_cost for below in found.below]
        usd = "some parts unpriced" if None in costs else f"${sum(c or 0.0 for c in costs):.2f}"
        return (
            f'<div class="seams" title="seams at {seams} s">{marks}</div>'
            + "".join(parts)
            + f'<p class="cost">{len(found.segments)} segments · seams at {seams} s ·'
            f" its parts est. {usd}</p>"
        )


def _gather(stitch: JobSpec, by_key: Mapping[str, JobSpec]) -> _Stitched:
    """The segments of ``stitch`` (from its input) and the jobs above each render."""
    rows = stitch.arguments.get("segments")
    refs = stitch.arguments.get("parts")
    segments = []
    if isinstance(rows, list) and isinstance(refs, list):
        for row, ref in zip(rows, refs, strict=False):
            index, rate, *_, keep_first, keep_end, _blend = row
            segment = _Segment(index, keep_first / rate, keep_end / rate)
            segment.render = by_key.get(_key(ref))
            segments.append(segment)
    found = _Stitched(segments or [_Segment(0, 0.0, 0.0)])
    seen: set[str] = set()
    stack = list(stitch.parents)
    while stack:
        key = stack.pop()
        spec = by_key.get(key)
        if spec is None or key in seen:
            continue
        seen.add(key)
        found.below.append(spec)
        stack.extend(spec.parents)
        if spec.labels.get(ROLE) == LOOK:
            found.look = spec
    for segment in found.segments:
        render = segment.render
        if render is None:
            continue
        segment.cut = by_key.get(_key(render.arguments.get("video_url")))
        start = by_key.get(_key(render.arguments.get("start_image_url")))
        if start is not None and start is not found.look:
            segment.start_frame = start
    return found


def _key(ref: object) -> str:
    parsed = split_parent_ref(ref) if isinstance(ref, str) else None
    return parsed[0] if parsed is not None else ""


def _link(
    spec: JobSpec | None, rows: Mapping[str, ShownRow], links: Links, text: str, title: str = ""
) -> str:
    """A link to a job's output when it is done, else its name and state."""
    if spec is None:
        return f'<span class="part">{html.escape(text)}</span>'
    row = rows.get(spec.key)
    state = row.state.value if row is not None else "new"
    tip = html.escape(f"{title or text} · {spec.label} · {state}", quote=True)
    if row is not None and state == "done" and row.outputs:
        path = str(row.outputs[0].get("path", ""))
        href = html.escape(links.output(path), quote=True)
        name = html.escape(PurePosixPath(path).name, quote=True)
        return (
            f'<a class="part s-done" href="{href}" title="{tip}" data-name="{name}">'
            f"{html.escape(text)}</a>"
        )
    return f'<span class="part s-{html.escape(state)}" title="{tip}">{html.escape(text)}</span>'


#: The panel's style, added to the page's.
CSS = """
.seams{position:relative;height:10px;background:#0d0f12;border-top:1px solid var(--line)}
.seam{position:absolute;top:0;width:3px;height:10px;margin-left:-1px;padding:0;border:0;
background:var(--busy);cursor:pointer}
.parts{display:flex;flex-wrap:wrap;gap:.25rem;padding:.3rem .55rem 0;font-size:12px}
.segment{display:inline-flex;gap:1px}
.part{display:inline-block;padding:0 .3rem;border-radius:3px;background:var(--wait);color:#fff;
text-decoration:none}
.part.s-done{background:#2d4f7c}.part.s-failed,.part.s-cancelled{background:var(--bad)}
"""

#: Clicking a seam mark plays the card's video from that moment.
JS = """
document.querySelectorAll('.seams').forEach((bar) => {
  bar.addEventListener('click', (event) => {
    const mark = event.target.closest('.seam');
    const video = bar.closest('article').querySelector('video');
    if (!mark || !video) return;
    video.currentTime = Number(mark.dataset.t);
    video.play().catch(() => {});
  });
});
"""
