"""The expansion of one manifest: sources (globs, hashing, probing), groups of jobs,
and the checks of media against each endpoint's limits."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..endpoints import (
    ENDPOINTS,
    EndpointSpec,
    EndpointTables,
    Limit,
    Loc,
    MediaField,
    Overrides,
    PriceTable,
    did_you_mean,
    format_loc,
    spec_for,
)
from ..job import LocalFile
from ..media import (
    MediaError,
    MediaInfo,
    MediaKind,
    extension,
    is_remote,
    local_file,
    probe,
    probe_remote,
    reference_problem,
)
from ..plan import (
    JobColumns,
    ManifestFacts,
    Plan,
    PlanInputs,
    SegmentedClip,
    glob_files,
    output_dir_for,
)
from ._expand import Expansion, input_layer, matrix_layers, safe_id, template_problem, url_id
from ._models import JobEntry, Manifest, Segments, SourceEntry, load
from ._overrides import manifest_overrides
from ._problems import Problems
from ._types import ARTICLE, TEMPLATE_VARIABLES, Group, Layer, Source, Template
from ._yaml import MAX_JOBS

# --------------------------------------------------------------------------- the plan


def _hours(seconds: float) -> str:
    """``7200`` as ``2h``, ``5430`` as ``1h30m30s``, ``95.5`` as ``95.5 s``."""
    if seconds < 60:
        return f"{seconds:g} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{n}{u}" for n, u in ((hours, "h"), (minutes, "m"), (secs, "s")) if n]
    return "".join(parts)


def plan(
    path: Path,
    *,
    output_dir: Path | None = None,
    probe_media: bool = True,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    probe_remote: bool = False,
    overrides: Overrides | None = None,
) -> Plan:
    """Expand the manifest at ``path`` into jobs; raises ``ManifestError`` with every problem.

    ``overrides`` are a ``--prices`` file's rows; they win over the manifest's own
    ``prices:``/``limits:`` (see ``endpoints.EndpointTables``).

    ``only``/``exclude`` are fnmatch patterns matched against each job's clip/image id and
    prompt name (see ``plans.is_selected``). ``probe_media`` reads local media headers
    (durations, kinds); ``probe_remote`` also asks each http(s) source for its type and size
    (the only time planning touches the network). ``plan_cache.cached_plan`` is the same
    with the expansion remembered.
    """
    manifest, lines = load(path)
    own = manifest_overrides(manifest, path)
    tables = EndpointTables([own, *([overrides] if overrides else [])])
    planner = Planner(
        manifest, path, lines, probe_media=probe_media, probe_remote=probe_remote, tables=tables
    )
    jobs = planner.expand()
    facts = ManifestFacts(
        manifest.name,
        manifest.output_dir,
        manifest.concurrency,
        manifest.max_cost,
        manifest.prompts,
    )
    limits = [dataclasses.asdict(limit) for limit in planner.applied.values()]
    inputs = PlanInputs(tuple(planner.local_inputs()), tuple(planner.globbed))
    whole = Plan(
        path,
        output_dir_for(path, facts, output_dir),
        facts,
        limits,
        columns=jobs,
        inputs=inputs,
        output_dir_given=output_dir is not None,
        segmented=planner.segmented,
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
    ) -> None:
        self.manifest = manifest
        self.base_dir = path.parent
        self.problems = Problems(str(path), lines)
        self.probe_media = probe_media
        self.probe_remote = probe_remote
        self.applied: dict[tuple[str, str], Limit] = {}
        self.tables = tables
        self.prices: PriceTable = self.tables.prices
        self._files: dict[str, LocalFile | None] = {}
        self.globbed: list[tuple[str, tuple[str, ...]]] = []
        self._media: dict[tuple[Path | str, str, MediaField], MediaInfo | None] = {}
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

    def sources(self) -> dict[str, Source]:
        """Every clip and image by id, globs expanded, local files hashed."""
        found: dict[str, Source] = {}
        lists: tuple[tuple[str, MediaKind, list[SourceEntry]], ...] = (
            ("clips", "video", self.manifest.clips),
            ("images", "image", self.manifest.images),
        )
        for list_name, kind, entries in lists:
            for index, entry in enumerate(entries):
                for source in self._entry_sources(entry, kind, (list_name, index)):
                    first = found.get(source.id)
                    if first is not None:
                        self.problems.add(
                            source.loc,
                            f"id {source.id!r} ({source.shown}) is already used by"
                            f" {format_loc(first.loc)} ({first.shown})",
                        )
                    else:
                        found[source.id] = source
        return found

    def _entry_sources(self, entry: SourceEntry, kind: MediaKind, loc: Loc) -> list[Source]:
        if entry.url is not None:
            return [Source(entry.id or url_id(entry.url), kind, loc, entry, entry.url, entry.url)]
        assert entry.path is not None
        if not any(char in entry.path for char in "*?["):
            file = self._local(entry.path, (*loc, "path"))
            stem = safe_id(Path(entry.path).stem)
            if file is None:
                return []
            return [Source(entry.id or stem, kind, loc, entry, file.placeholder, entry.path, file)]
        if entry.id is not None:
            self.problems.add((*loc, "id"), "a glob's ids come from its file names; remove id:")
        # os.path.join lets an absolute pattern stand; Path.glob refuses those.
        pattern = os.path.join(self.base_dir, entry.path)
        matches = glob_files(pattern)
        self.globbed.append((pattern, tuple(matches)))
        if not matches:
            self.problems.add((*loc, "path"), f"{entry.path} matches no file")
        sources = []
        for match in matches:
            absolute = os.path.isabs(entry.path)
            shown = match if absolute else Path(os.path.relpath(match, self.base_dir)).as_posix()
            file = self._local(shown, (*loc, "path"))
            if file is not None:
                sid = safe_id(Path(match).stem)
                sources.append(Source(sid, kind, loc, entry, file.placeholder, shown, file))
        return sources

    def _local(self, reference: str, loc: Loc) -> LocalFile | None:
        """The hashed local file ``reference`` names (relative to the manifest), or None."""
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
                self.problems.add(loc, f"{reference}: {reason}", alike=(reference, reason))
                self._files[reference] = None
        return self._files[reference]

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
            groups.append(Group(source.loc, spec, source, layers, matrix, prompts, template))
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
        return Group(("prompts",), spec, None, [self._shared(defaults, spec)], matrix, prompts,
                     template)  # fmt: skip

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
        return Group(loc, spec, source, layers, matrix, prompts, template)

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
        long: tuple[Segments, Loc] | None = None,
    ) -> MediaInfo | None:
        """Check a local file (or a remote URL, with probe_remote) against ``spec``'s limits,
        once per endpoint; its measured facts, when it was measured.

        ``long``: the clip is cut into renders when longer than one (its ``segments:``
        settings and their place), so its length is capped by ``max_source`` instead of
        the endpoint's longest source, and it must have a length to cut."""
        local = isinstance(file, LocalFile)
        key = (file.path if isinstance(file, LocalFile) else file, spec.id, kind)
        if key in self._media:
            return self._media[key]
        limits = self.tables.limits_for(spec.id)

        def limit(name: str) -> Limit | None:
            found = limits.get(name)
            if found is not None:
                self.applied.setdefault((spec.id, name), found)
            return found

        info = self._measure(file, shown, kind, loc)
        size = file.size if isinstance(file, LocalFile) else info.size if info else None
        size_limit = limit("max_file_bytes") if size is not None else None
        if size_limit is not None and size is not None and size > size_limit.number:
            self.problems.add(
                loc,
                f"{shown}: {size / 1e6:.1f} MB; {spec.name} accepts at most"
                f" {size_limit.number / 1e6:g} MB {size_limit.cite}",
            )
        if kind != "any":
            ext = extension(file.path.name) if isinstance(file, LocalFile) else None
            containers = limit(f"{kind}_containers") if ext is not None else None
            if containers is not None and ext is not None and ext not in containers.choices:
                self.problems.add(
                    loc,
                    f"{shown}: .{ext} files are not accepted by {spec.name}"
                    f" (accepted: {', '.join(containers.choices)}) {containers.cite}",
                )
            if info is not None and not info.fits(kind) and (local or info.kind != "unknown"):
                what = ARTICLE[info.kind]
                if info.kind == "unknown" and info.has_audio:
                    what = "sound only, with no video stream"
                self.problems.add(
                    loc, f"{shown} is {what}, but {spec.name} needs {ARTICLE[kind]} here"
                )
                info = None
            measured = kind == "video" and info is not None and info.duration is not None
            if long is not None and info is not None and kind == "video":
                self._check_long(info, shown, loc, *long)
                measured = False  # no render is longer than the endpoint's longest source
            seconds = limit("max_source_seconds") if measured else None
            if info is not None and seconds is not None and (info.duration or 0) > seconds.number:
                self.problems.add(
                    loc,
                    f"{shown}: {info.duration or 0:.1f} s long; {spec.name} accepts at most"
                    f" {seconds.number:g} s {seconds.cite}",
                )
        self._media[key] = info
        return info

    def _check_long(self, info: MediaInfo, shown: str, loc: Loc, s: Segments, at: Loc) -> None:
        """A clip to cut must have a length, a rate, and be no longer than ``max_source``."""
        if not info.duration or info.duration <= 0:
            self.problems.add(loc, f"{shown}: its video has no length (zero frames or no duration)")
        elif not info.fps:
            self.problems.add(loc, f"{shown}: its frame rate cannot be read")
        elif info.duration > s.max_source:
            self.problems.add(
                loc,
                f"{shown}: {_hours(info.duration)} long, over the longest clip raybatch cuts"
                f" ({_hours(s.max_source)}, segments.max_source at {format_loc(at)}); raise"
                " max_source or trim the clip",
            )

    def _measure(
        self, file: LocalFile | str, shown: str, kind: MediaField, loc: Loc
    ) -> MediaInfo | None:
        try:
            if isinstance(file, LocalFile):
                return probe(file.path) if self.probe_media and kind != "any" else None
            remote = self.probe_remote and not file.startswith("data:")
            return probe_remote(file) if remote else None
        except MediaError as exc:
            what = f"could not be read as {kind}" if isinstance(file, LocalFile) else "unusable"
            self.problems.add(loc, f"{shown}: {what}: {exc.reason}")
            return None

    # ----------------------------------------------------------------- expansion

    def expand(self) -> JobColumns:
        """All the manifest's jobs in manifest order; raises ``ManifestError``."""
        sources = self.sources()
        groups = self.groups(sources)
        total = sum(group.size for group in groups)
        if total > MAX_JOBS:
            self.problems.add(
                (), f"expands to {total:,} jobs; raybatch plans at most {MAX_JOBS:,} per manifest"
            )
            self.problems.raise_if_any()
        self._check_shared_keys()
        expansion = Expansion(self)
        jobs = expansion.run(groups)
        self.segmented = expansion.long.facts()
        self.problems.raise_if_any()
        if not jobs:
            self.problems.add((), "makes no jobs: list clips/images and prompts, or jobs: entries")
            self.problems.raise_if_any()
        return jobs

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
