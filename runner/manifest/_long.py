"""Long clips: a video-to-video clip longer than one render becomes a graph of jobs.

fal's Ray 3.2 video-to-video renders exactly 5 s or 10 s and returns silent video (fal's
model page and luma.md, update 2026-12-04), so a longer clip is cut into segments of
exactly those lengths (``media.plan_segments``), each rendered on its own, and stitched
back with the source's sound. Per clip, shared by every prompt (same key, one job):

- ``local/cut`` per segment: the segment prepared for fal (frame-exact, upright, scaled
  to the requested resolution), under ``.prepared/<clip>-<sha>/<resolution>/``;
- ``local/frame``: the clip's first frame (the look's input; the same job as
  ``gate: looks`` makes) and, under ``anchor``, each later segment's first frame.

Per clip × prompt (× matrix combination × take):

- ``anchor`` (the default): a *look frame*, a Uni-1 edit of the clip's first frame with
  the prompt (``looks/<clip>/<prompt>.png``, the same job as ``gate: looks`` makes); per
  later segment a *start frame*, a Uni-1 edit of its own first frame with the look in
  ``reference_image_urls``; every render gets its start frame as ``start_image_url``
  (segment 0 the look itself, which is that very edit) and all render at once;
- ``chain``: segment 0 starts from the look, each later segment from the previous
  render's frame at its first moment (a ``local/frame`` of that render), so a clip's
  renders go one after another; a segment that opens a new shot (``cut: shots``) starts
  from its own start frame instead, as there is nothing to continue;
- ``none``: independent renders from the source alone;
- ``local/stitch``: the renders in order, overlaps trimmed or blended, with the source's
  sound, written to the job's output path. Renders and chain frames go beside it in
  ``<output stem>.parts/``.

A clip that fits one render stays one job, exactly as before (same input, same key).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from ..endpoints import VIDEO_TO_VIDEO
from ..job import (
    LOCAL_PREFIX,
    LOOK,
    ROLE,
    job_key,
    parent_ref,
    split_parent_ref,
    substitute,
)
from ..media import Segment, SegmentPlan
from ..plan import JobColumns, SegmentedClip
from ._cutting import EDIT, START_IMAGE, Cutter, Cutting, Single, edit_base, edit_cost
from ._looks import FRAME_DIR, look_path
from ._models import Segments
from ._types import Combo, Group, JobId, Layer, append_job

if TYPE_CHECKING:
    from ..media import MediaInfo
    from ._expand import Expansion

CUT = "local/cut"
FRAME = "local/frame"
STITCH = "local/stitch"
#: The label that numbers a long clip's segments (0, 1, ...).
SEGMENT = "segment"
#: The role of a later segment's start frame (the look's role is ``job.LOOK``).
START = "start"
PREPARED_DIR = ".prepared"
PARTS_SUFFIX = ".parts"


@dataclass
class _Facts:
    """What ``plan`` says of one clip cut one way (see ``plan.SegmentedClip``)."""

    cutting: Cutting
    outputs: int = 0
    usd: float | None = 0.0


class LongClips:
    """The long-clip jobs of one expansion; jobs shared between prompts are placed once."""

    def __init__(self, expansion: Expansion) -> None:
        self.expansion = expansion
        self.planner = expansion.planner
        self.problems = expansion.problems
        self.prices = self.planner.prices
        self.cutter = Cutter(self.planner)
        # Shared with the looks of ``gate: looks``: a clip's first frame and a look are
        # the same jobs there, placed once whichever made them first.
        self._placed = expansion.looks.added
        self._facts: dict[tuple[Any, ...], _Facts] = {}

    def cutting(
        self, group: Group, layers: list[Layer], combo: Combo, info: MediaInfo | None
    ) -> Cutting | Single | None:
        """How the group's jobs of one combination render their clip (see ``Cutter``)."""
        return self.cutter.cutting(group, layers, combo, info)

    # ----------------------------------------------------------------- the graph

    def add(
        self,
        cutting: Cutting,
        group: Group,
        combo: Combo,
        prompt: str | None,
        text: str,
        take: int,
        job: JobId,
        jobs: JobColumns,
        *,
        gated: bool = False,
    ) -> bool:
        """The graph of one long clip × prompt × combination × take, each shared job once;
        whether it was placed (not refused). ``gated`` (``gate: looks``): every render and
        start frame waits for a person to approve the look, made even without continuity."""
        base = combo.base
        source, settings, plan = cutting.source, cutting.settings, cutting.plan
        assert base is not None and source.file is not None
        sha = source.file.sha256
        if prompt is not None and not self.expansion.looks.prompt_ok(prompt, text):
            return False
        graph = _Graph(source.id, prompt, take, gated)
        resolution = str(base.get("resolution", ""))
        folder = f"{PREPARED_DIR}/{source.id}-{sha[:12]}/{resolution or 'source'}"
        cuts = [
            graph.job(
                CUT,
                self._cut_arguments(sha, segment, resolution),
                f"{folder}/{_span(segment)}.mp4",
                {SEGMENT: segment.index},
                where="shared",
                files=(sha,),
                clip_wide=True,
            )
            for segment in plan.segments
        ]
        look = None
        if settings.continuity != "none" or gated:
            first = graph.job(
                FRAME,
                {"video_url": LOCAL_PREFIX + sha, "at": "first"},
                f"{FRAME_DIR}/{source.id}-{sha[:12]}.png",
                {},
                where="shared",
                files=(sha,),
                clip_wide=True,
            )
            look = graph.job(
                EDIT,
                {**edit_base(), "prompt": text, "image_url": parent_ref(first)},
                look_path(source.id, prompt, take),
                {ROLE: LOOK},
                where="shared",
                cost=edit_cost(self.prices),
                take=take,
            )
        renders: list[str] = []
        for segment, cut in zip(plan.segments, cuts, strict=True):
            steer = look if settings.continuity != "none" else None
            start = self._start(graph, segment, cut, steer, renders, plan, settings, folder, text)
            arguments = {**base, "prompt": text, "video_url": parent_ref(cut)}
            arguments["duration"] = segment.duration
            if start is not None:
                arguments[START_IMAGE] = parent_ref(start)
            renders.append(
                graph.job(
                    VIDEO_TO_VIDEO,
                    arguments,
                    f"seg{segment.index:02d}_{_span(segment)}.mp4",
                    {**combo.labels, SEGMENT: segment.index},
                    cost=self.cutter.render_price(base, segment.duration),
                    take=take,
                    gates=(look,) if graph.gated and look is not None else (),
                )
            )
        stitch = self._stitch_arguments(cutting, renders, sha)
        key = job_key(STITCH, stitch, take)
        output = self.expansion._output(group, combo, key, job)
        if output is None:
            return False
        parts = str(PurePosixPath(output).with_suffix("")) + PARTS_SUFFIX
        files = (sha,) if "audio_url" in stitch else ()
        labels = dict(combo.labels)
        graph.job(STITCH, stitch, output, labels, where="final", files=files, take=take)
        graph.owner = job
        self._place(graph, parts, jobs, cutting)
        return True

    def _start(
        self,
        graph: _Graph,
        segment: Segment,
        cut: str,
        look: str | None,
        renders: list[str],
        plan: SegmentPlan,
        settings: Segments,
        folder: str,
        text: str,
    ) -> str | None:
        """The key of the job whose output starts ``segment``'s render, or None."""
        if look is None:
            return None
        if segment.index == 0:
            return look  # the look is the Uni-1 edit of this very first frame
        if settings.continuity == "chain" and not segment.starts_shot:
            previous = plan.segments[segment.index - 1]
            # The previous render's frame at this segment's first moment: with an overlap
            # (or a last segment pulled back) that moment is inside it; else it is the one
            # right after its last frame, and its last frame is the nearest.
            offset = (segment.first - previous.first) / previous.rate
            at: str | float = "last" if segment.first >= previous.end else round(offset, 6)
            return graph.job(
                FRAME,
                {"video_url": parent_ref(renders[-1]), "at": at},
                f"seg{segment.index:02d}_start.png",
                {SEGMENT: segment.index},
            )
        frame = graph.job(
            FRAME,
            {"video_url": parent_ref(cut), "at": "first"},
            f"{folder}/{_span(segment)}.png",
            {SEGMENT: segment.index},
            where="shared",
            clip_wide=True,
        )
        arguments = {
            **edit_base(),
            "prompt": text,
            "image_url": parent_ref(frame),
            "reference_image_urls": [parent_ref(look)],
        }
        resolution = folder.rsplit("/", 1)[-1]
        where = PurePosixPath(look_path(graph.clip, graph.prompt, graph.take)).with_suffix("")
        return graph.job(
            EDIT,
            arguments,
            f"{where}/{resolution}/{_span(segment)}.png",
            {SEGMENT: segment.index, ROLE: START},
            where="shared",
            cost=self.prices.estimate(EDIT, arguments, None),
            take=graph.take,
            gates=(look,) if graph.gated else (),
        )

    def _cut_arguments(self, sha: str, segment: Segment, resolution: str) -> dict[str, Any]:
        limit = self.planner.tables.limits_for(VIDEO_TO_VIDEO).get("max_file_bytes")
        return {
            "video_url": LOCAL_PREFIX + sha,
            "first": segment.first,
            "frames": segment.frames,
            "rate": segment.rate,
            "max_height": int(resolution.removesuffix("p")) if resolution[:-1].isdigit() else None,
            "max_bytes": int(limit.number) if limit is not None else None,
        }

    @staticmethod
    def _stitch_arguments(cutting: Cutting, renders: list[str], sha: str) -> dict[str, Any]:
        """What the stitch needs: each render and the segment it holds, how seams join, and
        where the sound comes from."""
        settings = cutting.settings
        arguments: dict[str, Any] = {
            "parts": [parent_ref(key) for key in renders],
            "segments": [segment_row(segment) for segment in cutting.plan.segments],
            "blend": settings.overlap > 0,
        }
        if settings.audio == "source" and cutting.info.has_audio:
            arguments["audio_url"] = LOCAL_PREFIX + sha
        return arguments

    # ----------------------------------------------------------------- placing

    def _place(self, graph: _Graph, parts: str, jobs: JobColumns, cutting: Cutting) -> None:
        """Append the graph's jobs not placed yet (parents first), and count its facts."""
        source = cutting.source
        assert source.file is not None
        total: float | None = 0.0
        renders_usd: float | None = 0.0
        looks_usd: float | None = 0.0
        owner = graph.owner
        assert owner is not None
        for planned in graph.jobs:
            if planned.endpoint == VIDEO_TO_VIDEO:
                renders_usd = _add(renders_usd, planned.cost)
            elif planned.endpoint == EDIT:
                looks_usd = _add(looks_usd, planned.cost)
            if planned.key in self._placed:
                continue
            self._placed.add(planned.key)
            total = _add(total, planned.cost)
            path = planned.output
            if planned.where == "parts":
                path = f"{parts}/{path}"
            if planned.where != "final":
                path = self.expansion.claim(path, planned.key, owner)
            prompt = None if planned.clip_wide else graph.prompt
            row = (source.id, prompt, planned.labels, planned.cost, planned.take)
            append_job(
                jobs, planned.key, planned.endpoint, planned.arguments, path, planned.files, *row,
                planned.parents, planned.gates,
            )  # fmt: skip
        jobs.local_files[source.file.sha256] = source.file
        spans = tuple(
            (round(s.start_time, 3), round(s.end_time, 3), s.seconds) for s in cutting.plan.segments
        )
        facts_key = (source.id, _describe(cutting), spans, renders_usd, looks_usd)
        facts = self._facts.get(facts_key)
        if facts is None:
            facts = self._facts[facts_key] = _Facts(cutting)
        facts.outputs += 1
        facts.usd = _add(facts.usd, total)

    def facts(self) -> list[SegmentedClip]:
        """What ``plan`` shows of each long clip, in manifest order."""
        found = []
        for key, facts in self._facts.items():
            cutting = facts.cutting
            plan = cutting.plan
            clip, settings, spans, renders_usd, looks_usd = key
            found.append(
                SegmentedClip(
                    clip,
                    cutting.source.shown,
                    round(cutting.info.duration or 0.0, 3),
                    plan.rate,
                    settings,
                    spans,
                    tuple(round(seam, 3) for seam in plan.seams),
                    (*plan.notes, *cutting.why),
                    facts.outputs,
                    _rounded(renders_usd),
                    _rounded(looks_usd),
                    _rounded(facts.usd),
                )
            )
        return found


@dataclass(frozen=True, slots=True)
class _Planned:
    """One job of a long clip's graph, before it is placed in the plan."""

    key: str
    endpoint: str
    arguments: dict[str, Any]
    #: Relative to the output directory (``shared``, ``final``) or to the parts folder.
    output: str
    where: Literal["shared", "parts", "final"]
    labels: dict[str, Any]
    cost: float | None
    files: tuple[str, ...]
    parents: tuple[str, ...]
    take: int
    #: A job of the clip whatever the prompt (a cut, a frame of the source): no prompt.
    clip_wide: bool
    #: Parents whose output a person must approve first (``gate: looks``).
    gates: tuple[str, ...] = ()


class _Graph:
    """The jobs of one long clip × prompt × combination × take, in the order made."""

    def __init__(self, clip: str, prompt: str | None, take: int, gated: bool = False) -> None:
        self.clip = clip
        self.prompt = prompt
        self.take = take
        #: Its paid work past the look waits for the look's approval (``gate: looks``).
        self.gated = gated
        self.jobs: list[_Planned] = []
        #: The stitched output's planning id, which intermediates are claimed for.
        self.owner: JobId | None = None

    def job(
        self,
        endpoint: str,
        arguments: dict[str, Any],
        output: str,
        labels: dict[str, Any],
        *,
        where: Literal["shared", "parts", "final"] = "parts",
        cost: float | None = 0.0,
        files: tuple[str, ...] = (),
        take: int = 1,
        clip_wide: bool = False,
        gates: tuple[str, ...] = (),
    ) -> str:
        """Add a job (its parents are the jobs its ``@job:`` placeholders name); its key."""
        key = job_key(endpoint, arguments, take)
        parents: dict[str, None] = {}

        def collect(text: str) -> str:
            found = split_parent_ref(text)
            if found is not None:
                parents[found[0]] = None
            return text

        substitute(arguments, collect)
        planned = _Planned(
            key, endpoint, arguments, output, where, labels, cost, files, tuple(parents), take,
            clip_wide, gates,
        )  # fmt: skip
        self.jobs.append(planned)
        return key


def segment_row(segment: Segment) -> list[int]:
    """A segment as the stitch's input holds it (see ``pipeline`` steps)."""
    return [
        segment.index,
        segment.rate,
        segment.first,
        segment.frames,
        segment.seconds,
        segment.keep_first,
        segment.keep_end,
        segment.blend_frames,
    ]


def _span(segment: Segment) -> str:
    return f"{segment.start_time:07.3f}-{segment.end_time:07.3f}"


def _describe(cutting: Cutting) -> str:
    s = cutting.settings
    audio = s.audio if cutting.info.has_audio or s.audio == "none" else "none (the clip has none)"
    return (
        f"length {s.length}, cut {s.cut}, overlap {s.overlap} frame(s), continuity"
        f" {s.continuity}, audio {audio}"
    )


def _add(total: float | None, cost: float | None) -> float | None:
    return None if total is None or cost is None else total + cost


def _rounded(usd: float | None) -> float | None:
    return None if usd is None else round(usd, 6)
