"""The expansion of one manifest: sources (globs, hashing, probing), groups of jobs,
and the checks of media against each endpoint's limits."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..endpoints import (
    ENDPOINTS,
    EndpointSpec,
    EndpointTables,
    Loc,
    MediaField,
    Overrides,
    PriceTable,
    did_you_mean,
    spec_for,
)
from ..errors import ManifestError, Problem, capped
from ..job import LocalFile
from ..media import is_remote, local_file, reference_problem
from ..plan import (
    DuplicateSource,
    JobColumns,
    ManifestFacts,
    Plan,
    PlanInputs,
    SegmentedClip,
    bad_source_hint,
    output_dir_for,
)
from ._checks import MediaChecks
from ._clips import Renders
from ._cutting import segmentable, settings_for
from ._expand import Expansion, input_layer, matrix_layers, template_problem
from ._looks import takes_and_gate
from ._models import JobEntry, Manifest, Segments, load
from ._overrides import manifest_overrides
from ._problems import Problems
from ._sources import SourceList
from ._types import ARTICLE, TEMPLATE_VARIABLES, Group, Layer, Source, Template
from ._yaml import MAX_JOBS

if TYPE_CHECKING:
    from ..media import MediaInfo

# --------------------------------------------------------------------------- the plan


def plan(
    path: Path,
    *,
    output_dir: Path | None = None,
    probe_media: bool = True,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    probe_remote: bool = False,
    overrides: Overrides | None = None,
    skip_bad: bool = False,
    extra_takes: Mapping[str, int] | None = None,
) -> Plan:
    """Expand the manifest at ``path`` into jobs; raises ``ManifestError`` with every problem.

    Sources that cannot be used are left out and listed in ``Plan.skipped``; whether they
    stop a command is its own decision (``Plan.bad_source_error``). ``skip_bad`` only says
    whether a ManifestError raised for other problems lists them too.

    ``extra_takes`` maps a take group (``job.take_group``: clip/prompt[matrix]) to the
    highest take it must have, above the manifest's ``takes:`` (a reroll asked for it).

    ``overrides`` are a ``--prices`` file's rows; they win over the manifest's own
    ``prices:``/``limits:`` (see ``endpoints.EndpointTables``).

    ``only``/``exclude`` are fnmatch patterns matched against each job's clip/image id and
    prompt name (see ``plan._select``). ``probe_media`` reads local media headers
    (durations, kinds); ``probe_remote`` also asks each http(s) source for its type and size
    (the only time planning touches the network). ``plan_cache.cached_plan`` is the same
    with the expansion remembered.
    """
    manifest, lines = load(path)
    own = manifest_overrides(manifest, path)
    tables = EndpointTables([own, *([overrides] if overrides else [])])
    planner = Planner(
        manifest,
        path,
        lines,
        probe_media=probe_media,
        probe_remote=probe_remote,
        tables=tables,
        extra_takes=extra_takes,
    )
    jobs = planner.expand(skip_bad=skip_bad or manifest.on_bad_source == "skip")
    facts = ManifestFacts(
        manifest.name,
        manifest.output_dir,
        manifest.concurrency,
        manifest.max_cost,
        manifest.prompts,
        manifest.on_bad_source,
        manifest.confirm_above,
    )
    limits = [dataclasses.asdict(limit) for limit in planner.applied.values()]
    inputs = PlanInputs(
        tuple(planner.local_inputs()), tuple(planner.globbed), volatile=planner.volatile
    )
    whole = Plan(
        path,
        output_dir_for(path, facts, output_dir),
        facts,
        limits,
        columns=jobs,
        inputs=inputs,
        output_dir_given=output_dir is not None,
        segmented=planner.segmented,
        skipped=planner.source_list.skipped,
        duplicates=planner.duplicate_sources(),
        clips=planner.renders.facts(planner.sources, planner.source_media, planner.prices),
    )
    return whole.selected(only, exclude)


class Planner:
    """One expansion of one manifest: sources, groups, jobs, and the problems met on the way."""

    def __init__(
        self,
        manifest: Manifest,
        path: Path,
        lines: Mapping[Loc, int],
        *,
        probe_media: bool,
        probe_remote: bool,
        tables: EndpointTables,
        extra_takes: Mapping[str, int] | None = None,
    ) -> None:
        self.manifest = manifest
        self.extra_takes: Mapping[str, int] = extra_takes or {}
        self.base_dir = path.parent
        self.problems = Problems(str(path), lines)
        self.checks = MediaChecks(tables, probe_media=probe_media, probe_remote=probe_remote)
        self.applied = self.checks.applied
        self.tables = tables
        self.prices: PriceTable = self.tables.prices
        self._files: dict[str, LocalFile | None] = {}
        #: Why each local file that could not be hashed could not be.
        self.file_errors: dict[str, str] = {}
        self.globbed: list[tuple[str, tuple[str, ...]]] = []
        #: A file read failed in a way its identity does not show (permissions): such a
        #: plan is not remembered.
        self.volatile = False
        self.source_list = SourceList(self)
        #: What each usable source measured, per endpoint id (None: not measured).
        self.source_media: dict[str, dict[str, MediaInfo | None]] = {}
        #: Source id -> (the earlier source holding the same bytes, jobs that are its).
        self.duplicates: dict[str, tuple[str, int]] = {}
        self.shown: dict[str, str] = {}  # source id -> its path or URL as the manifest has it
        self.sources: dict[str, Source] = {}
        self.renders = Renders()
        self._layers: dict[tuple[Loc, str], Layer] = {}
        self.segmented: list[SegmentedClip] = []
        # What a template may name: a job's own variables and any input field anywhere.
        variables = set(TEMPLATE_VARIABLES).union(manifest.defaults, manifest.matrix)
        for spec in ENDPOINTS.values():
            variables.update(spec.fields or ())
        for entry in manifest.jobs:
            variables.update(entry.input, entry.matrix)
        for source_entry in (*manifest.clips, *manifest.images):
            variables.update(source_entry.input)
        self.variables = frozenset(variables)

    # ----------------------------------------------------------------- sources

    def local(self, reference: str) -> LocalFile | None:
        """The hashed local file ``reference`` names (relative to the manifest), or None
        with the reason in ``file_errors``."""
        if reference not in self._files:
            path = self.base_dir / reference
            try:
                self._files[reference] = local_file(path)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                if isinstance(exc, FileNotFoundError):
                    reason = "no such file"
                elif isinstance(exc, IsADirectoryError):
                    reason = "is a directory, not a file"
                self.file_errors[reference] = reason
                self._files[reference] = None
        return self._files[reference]

    def _local(self, reference: str, loc: Loc) -> LocalFile | None:
        """``local``, a file that cannot be read being a problem at ``loc``."""
        file = self.local(reference)
        if file is None:
            reason = self.file_errors[reference]
            self.problems.add(loc, f"{reference}: {reason}", alike=(reference, reason))
        return file

    def duplicate_sources(self) -> list[DuplicateSource]:
        """Sources whose jobs are an earlier source's (the same bytes), with both paths."""
        return [
            DuplicateSource(source_id, self.shown[source_id], same_as, self.shown[same_as], jobs)
            for source_id, (same_as, jobs) in self.duplicates.items()
        ]

    def local_inputs(self) -> Iterator[tuple[str, str, int, int, str]]:
        """(path as named, real path, size, mtime, sha256) of each local file the manifest
        named.

        The path as named, not ``LocalFile.path``: hashes are shared per real file, so that
        may be another name of the same bytes, and a symlink retargeted later must count.
        """
        for reference, file in self._files.items():
            if file is not None:
                shown = str(self.base_dir / reference)
                yield shown, file.real, file.size, file.mtime_ns, file.sha256

    # ----------------------------------------------------------------- groups

    def groups(self, sources: dict[str, Source]) -> list[Group]:
        """The job groups: each source × all prompts × matrix, then each ``jobs:`` entry."""
        manifest = self.manifest
        defaults = Layer(manifest.defaults, ("defaults",))
        top_matrix = matrix_layers(manifest.matrix, ("matrix",))
        top_template = (manifest.output, ("output",))
        groups: list[Group] = []
        for source in sources.values():
            spec = self._endpoint(source.entry.endpoint, source.loc)
            if spec is None or not self._accepts(spec, source, source.loc):
                continue
            layers = [self._shared(defaults, spec), self._own(input_layer(source), spec)]
            taken = [name for name in top_matrix if spec.takes(name)]
            matrix = [[self._shared(value, spec) for value in top_matrix[name]] for name in taken]
            template = self._template(top_template, source, taken)
            prompts: list[str | None] = list(manifest.prompts)
            own = source.entry
            judging = takes_and_gate(manifest, source.loc, own)
            groups.append(
                Group(source.loc, spec, source, layers, matrix, prompts, template, *judging)
            )
        for index, entry in enumerate(manifest.jobs):
            group = self._entry_group(entry, ("jobs", index), sources, defaults, top_template)
            if group is not None:
                groups.append(group)
        if not sources and not manifest.jobs and manifest.prompts:
            # Prompts alone (text-to-video, text-to-image): each prompt × the matrix.
            group = self._prompts_group(defaults, top_matrix, top_template)
            if group is not None:
                groups.append(group)
        return groups

    def _prompts_group(
        self,
        defaults: Layer,
        top_matrix: dict[str, list[Layer]],
        top_template: tuple[str | None, Loc],
    ) -> Group | None:
        """Every prompt × the matrix on the manifest's endpoint, for a manifest with no
        clips, images or ``jobs:`` entries."""
        spec = self._endpoint(self.manifest.endpoint, ("endpoint",))
        if spec is None:
            return None
        taken = [name for name in top_matrix if spec.takes(name)]
        matrix = [[self._shared(value, spec) for value in top_matrix[name]] for name in taken]
        template = self._template(top_template, None, taken)
        prompts: list[str | None] = list(self.manifest.prompts)
        judging = takes_and_gate(self.manifest, ("prompts",))
        return Group(("prompts",), spec, None, [self._shared(defaults, spec)], matrix, prompts,
                     template, *judging)  # fmt: skip

    def _entry_group(
        self,
        entry: JobEntry,
        loc: Loc,
        sources: dict[str, Source],
        defaults: Layer,
        top_template: tuple[str | None, Loc],
    ) -> Group | None:
        source = None
        reference = entry.clip or entry.image
        if reference is not None:
            source = sources.get(reference)
            if source is None and reference in self.source_list.skipped_ids:
                return None  # left out with its source, which the plan lists with the reason
            if source is None:
                key = "clip" if entry.clip is not None else "image"
                hint = did_you_mean(reference, sources)
                self.problems.add((*loc, key), f"no clip or image has id {reference!r}{hint}")
                return None
        prompts: list[str | None] = (
            [entry.prompt] if entry.prompt else list(entry.prompts or []) or [None]
        )
        prompts_loc = (*loc, "prompt" if entry.prompt else "prompts")
        for index, name in enumerate(prompts):
            if name is not None and name not in self.manifest.prompts:
                at = prompts_loc if entry.prompt else (*prompts_loc, index)
                hint = did_you_mean(name, self.manifest.prompts)
                self.problems.add(at, f"no prompt is named {name!r}{hint}")
                return None
        endpoint = entry.endpoint
        if endpoint is None and source is not None:
            endpoint = source.entry.endpoint
        spec = self._endpoint(endpoint, loc)
        if spec is None or (source is not None and not self._accepts(spec, source, loc)):
            return None
        layers = [self._shared(defaults, spec)]
        if source is not None:
            layers.append(self._own(input_layer(source), spec))
        layers.append(self._own(Layer(entry.input, (*loc, "input")), spec))
        own_matrix = matrix_layers(entry.matrix, (*loc, "matrix"))
        matrix = [[self._own(value, spec) for value in values] for values in own_matrix.values()]
        output = (entry.output, (*loc, "output")) if entry.output else top_template
        template = self._template(output, source, list(own_matrix))
        inherited = [source.entry] if source is not None else []
        judging = takes_and_gate(self.manifest, loc, entry, *inherited)
        return Group(loc, spec, source, layers, matrix, prompts, template, *judging)

    def _endpoint(self, endpoint: str | None, loc: Loc) -> EndpointSpec | None:
        endpoint = endpoint or self.manifest.endpoint
        if endpoint is None:
            self.problems.add(
                (*loc, "endpoint"),
                "no endpoint: set endpoint: at the top of the manifest or on this entry",
            )
            return None
        return spec_for(endpoint)

    def _accepts(self, spec: EndpointSpec, source: Source, loc: Loc) -> bool:
        if spec.source_field_for(source.kind) is not None:
            return True
        noun = "clip" if source.kind == "video" else "image"
        if spec.source_kind is None:
            message = (
                f"{noun} {source.id!r} cannot go to {spec.id}: it takes no clip or image;"
                f" list {spec.name} jobs under jobs: without a clip"
            )
        else:
            message = (
                f"{noun} {source.id!r} is {ARTICLE[source.kind]}, but {spec.id} takes"
                f" {ARTICLE[spec.source_kind]} ({spec.source_field})"
            )
        self.problems.add(loc, message)
        return False

    def _template(
        self, template: tuple[str | None, Loc], source: Source | None, matrix: list[str]
    ) -> Template:
        text, loc = template
        if text is None:  # the default keeps every job of a group apart
            head = "{clip}" if source is not None else "{endpoint}"
            text = head + "/{prompt}" + "".join(f"-{{{name}}}" for name in matrix) + "{ext}"
        problem = template_problem(text, self.variables)
        if problem is not None:
            self.problems.add(loc, problem)
        return Template(text, loc, problem is None)

    # ----------------------------------------------------------------- layers

    def _shared(self, layer: Layer, spec: EndpointSpec) -> Layer:
        """A layer every job shares (``defaults``, top ``matrix``): fields the endpoint lacks
        are left out for it, and only a field no endpoint takes is an error."""
        taken = {name: value for name, value in layer.values.items() if spec.takes(name)}
        return self._own(Layer(taken, layer.loc, matrix=layer.matrix), spec, key=layer.loc)

    def _own(self, layer: Layer, spec: EndpointSpec, *, key: Loc | None = None) -> Layer:
        """The layer with local files in media fields replaced by their placeholders."""
        cache_key = (key or layer.loc, spec.id)
        resolved = self._layers.get(cache_key)
        if resolved is None:
            files: dict[str, LocalFile] = {}
            values = {
                name: self._media_value(value, spec, name, layer.origin((name,)), files)
                for name, value in layer.values.items()
            }
            resolved = Layer(values, layer.loc, files, layer.matrix)
            self._layers[cache_key] = resolved
        return resolved

    def _media_value(
        self, value: Any, spec: EndpointSpec, name: str, loc: Loc, files: dict[str, LocalFile]
    ) -> Any:
        kind = spec.media_kind(name)
        if kind is None:
            return value
        if isinstance(value, list):
            return [
                self._media_value(item, spec, name, (*loc, index), files)
                for index, item in enumerate(value)
            ]
        if not isinstance(value, str):
            return value  # the endpoint model names the type error
        if is_remote(value):
            problem = reference_problem(value)
            if problem is not None:
                self.problems.add(loc, problem)
            return value
        file = self._local(value, loc)
        if file is None:
            return value
        self.check_media(file, value, spec, kind, loc)
        files[file.sha256] = file
        return file.placeholder

    # ----------------------------------------------------------------- media

    def check_media(
        self,
        file: LocalFile | str,
        shown: str,
        spec: EndpointSpec,
        kind: MediaField,
        loc: Loc,
        *,
        sink: Callable[[str], None] | None = None,
        long: tuple[Segments, Loc] | None = None,
    ) -> MediaInfo | None:
        """Check a local file (or a remote URL, with probe_remote) against ``spec``'s limits,
        once per endpoint; its measured facts, when it was measured. Each thing wrong goes
        to ``sink`` (a reason), or else is a problem at ``loc``.

        ``long``: the clip is cut into renders when longer than one (its ``segments:``
        settings and their place), so its length is capped by ``max_source`` instead of
        the endpoint's longest source."""
        info, reasons = self.checks.check(file, spec, kind, long=long)
        for reason in reasons:
            if sink is not None:
                sink(reason)
            else:
                self.problems.add(loc, f"{shown}: {reason}")
        return info

    # ----------------------------------------------------------------- expansion

    def expand(self, *, skip_bad: bool = False) -> JobColumns:
        """All the manifest's jobs in manifest order; raises ``ManifestError`` (listing the
        sources left out too, unless ``skip_bad``)."""
        if not skip_bad:
            self.problems.before_raising(self._bad_source_problems)
        sources = self.sources = self.source_list.collect()
        self.shown = {source_id: source.shown for source_id, source in sources.items()}
        groups = self._usable(self.groups(sources))
        total = sum(group.size for group in groups)
        if total > MAX_JOBS:
            self.problems.add(
                (), f"expands to {total:,} jobs; raybatch plans at most {MAX_JOBS:,} per manifest"
            )
            self.problems.raise_if_any()
        self._check_shared_keys()
        expansion = Expansion(self)
        jobs = expansion.run(groups)
        expansion.looks.check_used(self.manifest.gate, bool(jobs))
        self.segmented = expansion.long.facts()
        self.problems.raise_if_any()
        if not jobs and self.source_list.skipped:
            skipped = self.source_list.skipped
            hint = Problem(
                self.problems.file,
                None,
                "",
                "nothing was submitted: every clip and image the manifest names was left out",
            )
            raise ManifestError(capped([s.problem for s in skipped], hint))
        if not jobs:
            self.problems.add((), "makes no jobs: list clips/images and prompts, or jobs: entries")
            self.problems.raise_if_any()
        return jobs

    def _bad_source_problems(self) -> tuple[list[Problem], Problem | None]:
        skipped = self.source_list.skipped
        hint = bad_source_hint(self.problems.file) if skipped else None
        return [s.problem for s in skipped], hint

    def _usable(self, groups: list[Group]) -> list[Group]:
        """The groups whose source passes its endpoint's media checks; the others' sources
        are left out with every reason, and so are all their groups."""
        reasons: dict[str, list[str]] = {}
        for group in groups:
            source = group.source
            if source is None:
                continue
            found = reasons.setdefault(source.id, [])
            measured = source.file or source.reference
            long = settings_for(self.manifest.segments, source) if segmentable(group) else None
            info = self.check_media(
                measured, source.shown, group.spec, source.kind, source.loc, sink=found.append,
                long=long,
            )  # fmt: skip
            self.source_media.setdefault(source.id, {})[group.spec.id] = info
        for source_id, found in reasons.items():
            if found:
                source = next(g.source for g in groups if g.source and g.source.id == source_id)
                unique = list(dict.fromkeys(found))
                self.source_list.skip(source_id, source.shown, source.loc, "; ".join(unique))
        return [g for g in groups if g.source is None or not reasons[g.source.id]]

    def _check_shared_keys(self) -> None:
        """A defaults: or matrix: key must fit some endpoint the manifest names."""
        manifest = self.manifest
        named = {manifest.endpoint, *(e.endpoint for e in (*manifest.clips, *manifest.images))}
        named.update(entry.endpoint for entry in manifest.jobs)
        specs = [spec_for(endpoint) for endpoint in named if endpoint is not None]
        if not specs or not all(spec.known for spec in specs):
            return  # a pass-through endpoint takes anything
        fields = {name for spec in specs for name in spec.fields or ()}
        for loc, layer in (("defaults",), manifest.defaults), (("matrix",), manifest.matrix):
            for name in layer:
                if name not in fields:
                    self.problems.add(
                        (*loc, name),
                        f"no endpoint in this manifest takes {name!r}{did_you_mean(name, fields)}",
                    )
