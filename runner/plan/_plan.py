"""A plan: the jobs a manifest asks for, in manifest order, and what a run needs of it.

``manifest.expand_manifest`` builds one by reading and expanding a manifest;
``plan_cache`` rebuilds one from disk without reading the YAML at all. A plan holds its
jobs either as ``JobSpec`` objects (fresh from the expansion) or as columns, one list per
field (from the cache), and converts on first use (see ``_jobs``).

Nothing here imports pydantic, PyAV or httpx: ``status`` on a cached plan stays cheap.
"""

from __future__ import annotations

import functools
import glob
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ManifestError, Problem, capped
from ..job import JobSpec
from ._jobs import JobColumns, JobList, with_ancestors
from ._select import CLIP, PROMPT, TAKE, Decider, Known, Selection, shown_value, unknown_values

#: Where outputs go when neither the manifest nor --output-dir says: outputs/<name>,
#: relative to the directory raybatch runs in.
DEFAULT_OUTPUT_ROOT = "outputs"


@dataclass(frozen=True, slots=True)
class ManifestFacts:
    """What the rest of raybatch needs of the manifest itself, beyond its jobs."""

    name: str
    output_dir: str | None  # as written in the manifest: relative to the manifest's folder
    concurrency: int | None
    max_cost: float | None
    prompts: Mapping[str, str]
    on_bad_source: str = "stop"  # or "skip"
    confirm_above: float | None = None


@dataclass(frozen=True, slots=True)
class PlanInputs:
    """What a plan read besides the manifest: it stays valid while these are unchanged."""

    #: (path as the manifest names it, its real path, size, mtime in ns, sha256) per local
    #: file, as hashed.
    files: tuple[tuple[str, str, int, int, str], ...] = ()
    #: (absolute glob pattern, the sorted files it matched) per glob in the manifest, and
    #: (path, ()) per file named that did not exist.
    globs: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: A read failed in a way no identity shows (permissions): the plan is not remembered.
    volatile: bool = False


@dataclass(frozen=True, slots=True)
class SkippedSource:
    """A clip or image left out of the plan (``on_bad_source: skip``), and why."""

    id: str
    path: str  # as the manifest names it, or the file a glob matched
    reason: str
    file: str  # the manifest
    line: int | None  # of the entry that names it
    field: str  # that entry's place: "clips[2]", "clips[2].path"
    suggested_id: str | None = None  # when its id is another source's

    @property
    def problem(self) -> Problem:
        """The reason as a manifest problem: ``FILE:LINE: FIELD: PATH: reason``."""
        return Problem(self.file, self.line, self.field, f"{self.path}: {self.reason}")


@dataclass(frozen=True, slots=True)
class ClipRender:
    """What one source's jobs on one endpoint and length render and cost."""

    endpoint: str
    jobs: int
    rendered: str  # "5.0 s of 7.0 s", "all 2.0 s", "a 5s clip from the still"
    billed: str  # "as 5s", "3 started seconds", "per job"
    usd: float | None  # all these jobs together (None: unpriced)


@dataclass(frozen=True, slots=True)
class ClipFacts:
    """A source as ``plan --clips`` shows it: what it is, what is rendered and billed of
    it, and what the user must know before paying. A fact the media reader does not give
    is None (not measured), never a guess."""

    id: str
    path: str
    kind: str  # "video" or "image"
    duration: float | None
    width: int | None  # as a player shows it (after any rotation)
    height: int | None
    fps: float | None
    rotation: int | None  # degrees a player turns the stored picture
    audio: bool | None
    renders: tuple[ClipRender, ...]
    warnings: tuple[str, ...]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> ClipFacts:
        """The facts from ``dataclasses.astuple`` of them (a plan cache record)."""
        values = list(row)
        values[-2] = tuple(ClipRender(*r) for r in values[-2])
        values[-1] = tuple(values[-1])
        return cls(*values)


def bad_source_hint(file: str) -> Problem:
    """What to do about sources that stop a plan, said after the list of them."""
    return Problem(
        file,
        None,
        "",
        "nothing was submitted: --skip-bad (or on_bad_source: skip in the manifest) plans"
        " and runs the rest, listing these",
    )


@dataclass(frozen=True, slots=True)
class DuplicateSource:
    """A source holding the same bytes as an earlier one: its jobs are the earlier one's
    (one upload, one render, paid once), so it has no jobs of its own."""

    id: str
    path: str
    same_as: str  # the earlier source's id
    same_as_path: str
    jobs: int  # how many of its jobs are the earlier source's


@dataclass(frozen=True, slots=True)
class SegmentedClip:
    """How one clip's video-to-video jobs are cut into renders and what that costs, as
    ``plan`` shows it (one per clip and distinct way of cutting it)."""

    clip: str
    path: str
    duration: float
    #: The constant frame rate segments are planned and prepared at.
    rate: int
    #: The ``segments:`` settings in force, e.g. ``length auto, cut fixed, ...``.
    settings: str
    #: (start, end, seconds rendered) of each render, in source seconds.
    spans: tuple[tuple[float, float, int], ...]
    #: Where one segment hands over to the next, in source seconds.
    seams: tuple[float, ...]
    #: Why the segments are as they are: merges, pulled-back segments, the cheaper cover.
    notes: tuple[str, ...]
    #: Stitched outputs made of these segments (clip × prompt × matrix × take).
    outputs: int
    #: Per output: the renders, and the look and start frames (None: unpriced).
    renders_usd: float | None
    looks_usd: float | None
    #: Every job these outputs need, each shared job once (None: some unpriced).
    usd: float | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> SegmentedClip:
        """The facts from ``dataclasses.astuple`` of them (a plan cache record)."""
        values = list(row)
        values[5] = tuple(tuple(span) for span in values[5])
        values[6], values[7] = tuple(values[6]), tuple(values[7])
        return cls(*values)


class Plan:
    """The jobs a manifest asks for, in manifest order, and what was checked to get them."""

    def __init__(
        self,
        manifest_path: Path,
        output_dir: Path,
        facts: ManifestFacts,
        limits_applied: list[dict[str, Any]],
        *,
        jobs: list[JobSpec] | None = None,
        columns: JobColumns | None = None,
        inputs: PlanInputs | None = None,
        fingerprint: str | None = None,
        output_dir_given: bool = False,
        segmented: Sequence[SegmentedClip] = (),
        skipped: Sequence[SkippedSource] = (),
        duplicates: Sequence[DuplicateSource] = (),
        clips: Sequence[ClipFacts] | Callable[[], Sequence[ClipFacts]] = (),
        whole: Plan | None = None,
    ) -> None:
        self.manifest_path = manifest_path
        self.output_dir = output_dir
        #: Whether the output directory was named by the caller (``--output-dir``).
        self.output_dir_given = output_dir_given
        self.facts = facts
        self.limits_applied = limits_applied
        self.inputs = inputs or PlanInputs()
        #: Names the manifest's whole plan in the plan cache (None: not remembered, or only
        #: a selection of it): the state file records the last plan added to it by this name.
        self.fingerprint = fingerprint
        #: How each long clip is cut into renders (``plan`` shows it).
        self.segmented = tuple(segmented)
        #: Sources left out (bad files under ``on_bad_source: skip``), with their reasons.
        self.skipped = tuple(skipped)
        #: Sources whose bytes an earlier source holds: their jobs are that source's.
        self.duplicates = tuple(duplicates)
        self._clips = clips
        #: The manifest's whole plan when this is a selection of it (--only/--exclude):
        #: results.jsonl and the review page always describe the whole.
        self.whole: Plan = whole or self
        if jobs is not None:
            self.jobs = JobList.of(jobs)
        elif columns is not None:
            self.jobs = JobList(columns)
        else:
            raise ValueError("a plan needs its jobs or their columns")

    @property
    def clips(self) -> tuple[ClipFacts, ...]:
        """Each source with jobs, as ``plan --clips`` shows it (its warnings too); read on
        each use, not kept (a remembered plan keeps them in a record of their own: a run
        reads them once, for their warnings, and would otherwise hold 10k of them)."""
        found = self._clips() if callable(self._clips) else self._clips
        return tuple(found)

    def bad_source_error(self, skip_bad: bool = False) -> ManifestError | None:
        """The error that stops a spending command when sources were left out, unless the
        command (``skip_bad``) or the manifest (``on_bad_source: skip``) skips them."""
        if not self.skipped or skip_bad or self.facts.on_bad_source == "skip":
            return None
        problems = sorted((s.problem for s in self.skipped), key=lambda p: p.line or 0)
        return ManifestError(capped(problems, bad_source_hint(str(self.manifest_path))))

    @functools.cached_property
    def identity(self) -> str | None:
        """Names exactly this plan's content: the manifest and code (the fingerprint) and
        every job key, which covers the bytes of every file read and every glob match.
        None when the plan has no fingerprint (not remembered, or only a selection)."""
        if self.fingerprint is None:
            return None
        digest = hashlib.sha256(self.fingerprint.encode())
        for key in self.keys:
            digest.update(key.encode())
        return digest.hexdigest()

    @property
    def columns(self) -> JobColumns:
        """Every job as columns."""
        return self.jobs.columns

    @property
    def keys(self) -> list[str]:
        """The job keys, in plan order."""
        return self.jobs.keys

    def __len__(self) -> int:
        return len(self.jobs)

    def selected(self, only: Sequence[str], exclude: Sequence[str]) -> Plan:
        """This plan with only the jobs ``only``/``exclude`` keep (see ``_select``), and
        every job those need (a clip's prepared segments serve all its prompts); raises
        ManifestError when a term matches nothing or no job is kept. Selecting never
        changes a job's key or output."""
        selection = Selection(only, exclude)
        if not selection:
            return self
        columns = self.columns
        fields = selection.fields
        labelled = bool(fields - {CLIP, PROMPT, TAKE})
        decider = Decider(*selection.groups(self._known(fields)))
        kept = []
        for i, (clip, prompt) in enumerate(zip(columns.clips, columns.prompts, strict=True)):
            job: dict[str, object] = {CLIP: clip, PROMPT: prompt}
            if TAKE in fields:
                job[TAKE] = str(columns.takes[i])
            if labelled:
                job.update((k, shown_value(v)) for k, v in columns.labels[i].items())
            if decider.keeps(job):
                kept.append(i)
        skipped = [s for s in self.skipped if decider.keeps(unknown_values(s.id)) is not False]
        duplicates = [
            d for d in self.duplicates if decider.keeps(unknown_values(d.id)) is not False
        ]
        if not kept:
            why = "".join(f"\n  it selects {s.path}, left out: {s.reason}" for s in skipped)
            words = " ".join(f"{t.option} {t.text}" for t in (*selection.only, *selection.exclude))
            raise ManifestError(f"usage: {words} selects no job of {len(self)}{why}")
        clips = {columns.clips[i] for i in kept}
        return Plan(
            self.manifest_path,
            self.output_dir,
            self.facts,
            self.limits_applied,
            columns=columns.take(with_ancestors(columns, kept)),
            inputs=self.inputs,
            output_dir_given=self.output_dir_given,
            segmented=[s for s in self.segmented if s.clip in clips],
            skipped=skipped,
            duplicates=duplicates,
            clips=lambda: [
                c for c in self.clips if decider.keeps(unknown_values(c.id)) is not False
            ],
            whole=self.whole,
        )

    def _known(self, fields: set[str]) -> Known:
        """The values the plan's jobs (and skipped sources) have in each field."""
        columns = self.columns
        clips = {c for c in columns.clips if c is not None}
        clips.update(s.id for s in self.skipped)
        matrix: dict[str, set[str]] = {}
        if fields - {CLIP, PROMPT, TAKE}:
            for labels in columns.labels:
                for name, value in labels.items():
                    matrix.setdefault(name, set()).add(shown_value(value))
        return Known(
            frozenset(clips),
            frozenset(p for p in columns.prompts if p is not None),
            frozenset(map(str, columns.takes)) if TAKE in fields else frozenset(),
            {name: frozenset(values) for name, values in matrix.items()},
        )


def output_dir_for(manifest_path: Path, facts: ManifestFacts, given: Path | None) -> Path:
    """The absolute output directory: --output-dir, else the manifest's, else the default."""
    if given is None:
        # output_dir: is relative to the manifest like every path in it; the default, like
        # the README's layout, is outputs/<name> under the directory raybatch runs in.
        if facts.output_dir is not None:
            given = manifest_path.parent / facts.output_dir
        else:
            given = Path(DEFAULT_OUTPUT_ROOT) / facts.name
    return Path(os.path.normpath(given.absolute()))


def glob_files(pattern: str) -> list[str]:
    """The regular files an absolute glob pattern matches, sorted (``**`` recurses)."""
    return sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
