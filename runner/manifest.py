"""From a YAML manifest to the list of jobs it asks for, or every reason it cannot be run.

``load_manifest`` parses and checks the manifest's structure; ``plan`` expands its clips and
images × prompts × matrix (plus its explicit ``jobs:``) into ``JobSpec``\\ s, validating
every input against its endpoint's model, hashing local files (a job's key covers their
bytes), checking media against the limits table and pricing each job. Every problem is
reported with the manifest's file, line and field path, all at once, in one
``ManifestError``. Nothing here touches the state, nor the network unless asked to
(``probe_remote``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import re
import stat
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import yaml
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)
from pydantic.config import JsonDict

from runner.endpoints import (
    ENDPOINTS,
    EndpointSpec,
    Issue,
    Limit,
    LimitOverrides,
    PriceOverride,
    PriceTable,
    Ruled,
    did_you_mean,
    format_loc,
    is_endpoint_id,
    issues_from,
    limits_for,
    spec_for,
)
from runner.endpoints.base import Violation
from runner.endpoints.issues import Loc
from runner.endpoints.prices import DEFAULT_PRICES
from runner.endpoints.registry import MediaField
from runner.errors import ManifestError, Problem
from runner.job import LocalFile, job_key
from runner.media import (
    MediaError,
    MediaInfo,
    MediaKind,
    extension,
    is_remote,
    local_file,
    not_a_regular_file,
    probe,
    probe_remote,
    reference_problem,
)
from runner.plans import JobColumns, ManifestFacts, Plan, PlanInputs, glob_files, output_dir_for

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

# Guards that turn absurd manifests into clear errors instead of hours of work or a crash.
MAX_MANIFEST_BYTES = 64 * 2**20
MAX_DEPTH = 64
MAX_VALUES = 5_000_000  # YAML aliases can nest a billion values into a few lines
MAX_JOBS = 250_000  # 2.5x the 100k design point; a planned job holds about 1 KB
MAX_SHOWN_PROBLEMS = 20
MAX_DIGITS = 100  # an integer longer than this is a mistake (and int() balks at 4300)

NONE = "none"  # what {clip} and {prompt} render as for a job without one
TEMPLATE_VARIABLES = ("clip", "image", "prompt", "endpoint", "key", "index", "ext")
_NAME = re.compile(r"[A-Za-z0-9._-]+")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
# Stand-ins for the fields placed per job (the prompt, the clip or image), so that one
# validation serves every prompt and source of a combination; no rule reads those fields.
_STAND_IN_PROMPT = "x"
_STAND_IN_FILE = "@local:" + "0" * 64
_ARTICLE = {"video": "a video", "image": "an image", "unknown": "not a video or image"}
_MERGE_TAG = "tag:yaml.org,2002:merge"
_SEPARATORS = re.compile(r"[/\\]")
_DRIVE = re.compile(r"[A-Za-z]:")


# --------------------------------------------------------------------------- YAML


class _Loader(_BaseLoader):
    """PyYAML's safe loader, refusing duplicate keys and YAML 1.1's base-60 numbers.

    ``16:9`` is the integer 969 to a YAML 1.1 parser; here it stays the string ``16:9``.
    ``field_lines`` walks the composed node tree before construction, so every field path
    gets its line number and a duplicate key is refused with both of its lines.
    """

    def field_lines(self, root: yaml.Node) -> dict[Loc, int]:
        """The line of every field path under ``root``; raises ``_YamlProblem``."""
        lines: dict[Loc, int] = {(): root.start_mark.line + 1}
        sizes: dict[int, int] = {}
        self._locs: dict[int, Loc] = {}
        if self._walk(root, (), lines, sizes, 0) > MAX_VALUES:
            raise _YamlProblem((), f"expands to more than {MAX_VALUES:,} values (YAML aliases?)")
        return lines

    def _walk(
        self, node: yaml.Node, loc: Loc, lines: dict[Loc, int], sizes: dict[int, int], depth: int
    ) -> int:
        if depth > MAX_DEPTH:
            line = node.start_mark.line + 1
            raise _YamlProblem(loc[:1], f"is nested more than {MAX_DEPTH} levels deep", line)
        if id(node) in sizes:  # an alias: counted again, walked once
            return sizes[id(node)]
        self._locs[id(node)] = loc
        size = 1
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if key.tag == _MERGE_TAG:
                    size += self._walk(value, loc, lines, sizes, depth + 1)
                    continue
                name = str(key.value)
                line = key.start_mark.line + 1
                if name in first:
                    raise _YamlProblem(
                        (*loc, name), f"duplicate key {name!r} (first on line {first[name]})", line
                    )
                first[name] = lines[(*loc, name)] = line
                size += self._walk(value, (*loc, name), lines, sizes, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*loc, index)] = item.start_mark.line + 1
                size += self._walk(item, (*loc, index), lines, sizes, depth + 1)
        sizes[id(node)] = size
        return size

    def _problem(self, node: yaml.Node, message: str) -> _YamlProblem:
        """A problem at ``node``: its line, and its field path when the walk saw it."""
        locs: dict[int, Loc] = getattr(self, "_locs", {})
        return _YamlProblem(locs.get(id(node), ()), message, node.start_mark.line + 1)

    def _number_or_text(self, node: yaml.ScalarNode) -> object:
        text = self.construct_scalar(node)
        if ":" in text:
            return text
        if node.tag.endswith(":int"):
            digits = sum(char.isdigit() for char in text)
            if digits > MAX_DIGITS:
                # int() refuses these itself (CPython's 4300-digit guard), with a ValueError.
                raise self._problem(node, f"a number of {digits:,} digits is not a sensible value")
            return self.construct_yaml_int(node)
        number = self.construct_yaml_float(node)
        if not math.isfinite(number):
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise self._problem(node, f"{shown!r} is not a finite number")
        return number

    def _text(self, node: yaml.ScalarNode) -> str:
        return str(self.construct_scalar(node))

    def _refuse(self, node: yaml.Node) -> None:
        raise self._problem(node, f"{node.tag} values are not supported")

    def _unknown_tag(self, node: yaml.Node) -> None:
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise self._problem(
            node, f"the YAML tag {tag!r} is not supported: a manifest is plain YAML (no tags)"
        )

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        """A mapping whose keys are strings: JSON, and so fal, knows no other keys."""
        mapping = super().construct_mapping(node, deep=deep)
        if all(isinstance(key, str) for key in mapping):
            return mapping
        return {key if isinstance(key, str) else str(key): value for key, value in mapping.items()}


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader._number_or_text)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader._number_or_text)
_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader._text)
for _tag in ("binary", "set", "omap", "pairs"):
    _Loader.add_constructor(f"tag:yaml.org,2002:{_tag}", _Loader._refuse)
_Loader.add_constructor(None, _Loader._unknown_tag)


class _YamlProblem(Exception):
    def __init__(self, loc: Loc, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.loc, self.message, self.line = loc, message, line


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[Loc, int]]:
    """The manifest's data and the line of each field path; raises ManifestError."""
    shown = str(path)

    def fail(message: str, line: int | None = None, loc: Loc = ()) -> ManifestError:
        return ManifestError(Problem(shown, line, format_loc(loc), message))

    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            # A FIFO or a device would block or never end; a directory has nothing to read.
            reason = not_a_regular_file(path, info.st_mode).strerror
            raise fail(f"cannot read the manifest: {reason}")
        if info.st_size > MAX_MANIFEST_BYTES:
            raise fail(
                f"is {info.st_size:,} bytes; a manifest may be at most {MAX_MANIFEST_BYTES:,}"
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise fail(f"cannot read the manifest: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
            raise fail("is UTF-16 text; save the manifest as UTF-8", 1) from None
        line = raw.count(b"\n", 0, exc.start) + 1
        raise fail(
            f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start});"
            " save the manifest as UTF-8",
            line,
        ) from None
    loader = _Loader(text)
    first_line = 1  # of the document, after any leading comments
    try:
        root = loader.get_single_node()
        if root is None:
            raise fail("the manifest is empty; it needs at least name: and some jobs")
        first_line = root.start_mark.line + 1
        lines = loader.field_lines(root)
        data = loader.construct_document(root)
    except _YamlProblem as exc:
        raise fail(exc.message, exc.line or first_line, exc.loc) from None
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(shown, text, exc) from None
    except yaml.reader.ReaderError as exc:
        # A character YAML refuses (NUL and other control characters), found by the reader.
        line = text.count("\n", 0, exc.position) + 1
        raise fail(
            f"YAML syntax error: character #x{exc.character:04x} is not allowed"
            " (control characters cannot appear in YAML, even quoted)",
            line,
        ) from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise fail(f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise fail(
            f"the manifest must be a mapping (name:, clips:, prompts:, ...), not {_a(data)}",
            first_line,
        )
    return data, lines


def _syntax_error(shown: str, text: str, exc: yaml.MarkedYAMLError) -> ManifestError:
    mark = exc.problem_mark or exc.context_mark
    at_end = exc.problem_mark is not None and not text[exc.problem_mark.index :].strip()
    if exc.context_mark is not None and at_end:
        # Something opened (a quote, a bracket) is never closed: the file's end is no help,
        # where it was opened is.
        mark = exc.context_mark
    line = mark.line + 1 if mark is not None else None
    if at_end:  # never a line past the last one written
        last = text.rstrip().count("\n") + 1
        line = min(line, last) if line is not None else last
    source_line = text.splitlines()[line - 1] if line and line <= len(text.splitlines()) else ""
    indent = source_line[: len(source_line) - len(source_line.lstrip())]
    if "\t" in indent or "'\\t'" in str(exc.problem):
        message = "a tab is used for indentation; YAML needs spaces"
    else:
        context = f" ({exc.context})" if exc.context else ""
        message = f"YAML syntax error: {exc.problem}{context}"
    return ManifestError(Problem(shown, line, "", message))


def _a(value: object) -> str:
    return {list: "a list", str: "a string", type(None): "empty"}.get(
        type(value), f"a {type(value).__name__}"
    )


# --------------------------------------------------------------------------- the manifest


def _check_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(f"{value!r} may only contain letters, digits, '.', '_' and '-'")
    return value


def _check_endpoint(value: str) -> str:
    if not is_endpoint_id(value):
        raise ValueError(f"{value!r} is not a fal endpoint id (owner/app[/path])")
    return value


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, dict) else value


Name = Annotated[str, Field(max_length=200), AfterValidator(_check_name)]
EndpointId = Annotated[str, AfterValidator(_check_endpoint)]
Values = Annotated[list[Any], Field(min_length=1)]
Matrix = dict[str, Values]


# Shorthands are spelt out before validation (a string for a clip entry, one price row for a
# list of them); the JSON Schema says so too, so that editors accept what raybatch accepts.
def _sources_schema(schema: JsonDict) -> None:
    shorthand: JsonDict = {"type": "string", "description": "a path, a glob, or an http(s) URL"}
    schema["items"] = {"anyOf": [shorthand, schema["items"]]}


def _price_rows_schema(schema: JsonDict) -> None:
    rows = schema["additionalProperties"]
    assert isinstance(rows, dict)
    schema["additionalProperties"] = {"anyOf": [rows["items"], rows]}


class _Entry(Ruled):
    """A manifest mapping: unknown keys refused, numbers accepted where text is expected."""

    model_config = ConfigDict(
        extra="forbid",
        coerce_numbers_to_str=True,
        use_attribute_docstrings=True,
        allow_inf_nan=False,  # "1e999" is YAML text, and float() would make it infinite
    )


class SourceEntry(_Entry):
    """One ``clips:`` or ``images:`` entry: a local path or glob, or a URL."""

    id: Name | None = None
    """The name jobs and templates use ({clip}); default: the file's stem."""
    path: str | None = None
    """A local file or glob, relative to the manifest."""
    url: str | None = None
    """An http(s) URL or a data: URI, sent to fal as it is."""
    endpoint: EndpointId | None = None
    """This source's endpoint, instead of the manifest's."""
    input: dict[str, Any] = {}
    """Endpoint input for this source's jobs, over defaults:."""

    @field_validator("url")
    @classmethod
    def _remote(cls, value: str | None) -> str | None:
        problem = None if value is None else reference_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def violations(self) -> Iterator[Violation]:
        """Exactly one of path and url."""
        yield from super().violations()
        if (self.path is None) == (self.url is None):
            yield "path", "give exactly one of path: (a local file or glob) and url:"


class JobEntry(_Entry):
    """One ``jobs:`` entry: an irregular job, or a small family of them via ``matrix``."""

    endpoint: EndpointId | None = None
    """The endpoint, if not the source's or the manifest's."""
    clip: Name | None = None
    """The id of a clip (or image) from clips:/images:."""
    image: Name | None = None
    """The id of an image (or clip) from images:/clips:."""
    prompt: Name | None = None
    """The name of one prompt from prompts:."""
    prompts: list[Name] | None = None
    """Names of prompts from prompts:, one job each."""
    input: dict[str, Any] = {}
    """Endpoint input for this entry, over defaults: and the source's input."""
    matrix: Matrix = {}
    """Input field -> values: one job per combination (the top matrix: does not apply)."""
    output: str | None = None
    """Output path template for this entry, instead of the manifest's."""

    def violations(self) -> Iterator[Violation]:
        """At most one source reference and one way of naming prompts."""
        yield from super().violations()
        if self.clip is not None and self.image is not None:
            yield "image", "give clip: or image:, not both"
        if self.prompt is not None and self.prompts is not None:
            yield "prompts", "give prompt: or prompts:, not both"


class Manifest(_Entry):
    """A raybatch manifest: what to render, with which endpoint, into which files."""

    name: Name
    """Names the batch and its default output directory, outputs/<name>."""
    endpoint: EndpointId | None = None
    """The fal endpoint of every job that does not name its own."""
    output: str | None = None
    """Output path template inside output_dir, e.g. "{clip}/{prompt}.mp4"."""
    output_dir: str | None = None
    """Where outputs and the state go, relative to the manifest."""
    concurrency: Annotated[int, Field(ge=1, le=1000)] | None = None
    """Requests in flight at fal at once (your account's concurrency limit)."""
    defaults: dict[str, Any] = {}
    """Endpoint input for every job, where the job's endpoint takes the field."""
    clips: list[SourceEntry] = Field(default=[], json_schema_extra=_sources_schema)
    """Source videos: paths, globs or URLs, each crossed with every prompt and the matrix."""
    images: list[SourceEntry] = Field(default=[], json_schema_extra=_sources_schema)
    """Source stills (image-to-video, Uni-1 edit), crossed like clips."""
    prompts: dict[Name, str] = {}
    """Prompt name -> prompt text."""
    matrix: Matrix = {}
    """Input field -> values: every source × prompt runs once per combination."""
    jobs: list[JobEntry] = []
    """Explicit jobs for irregular cases and for endpoints that take no source."""
    limits: dict[EndpointId, LimitOverrides] = {}
    """Per-endpoint overrides of the limits table."""
    prices: dict[EndpointId, Annotated[list[PriceOverride], BeforeValidator(_one_or_many)]] = Field(
        default={}, json_schema_extra=_price_rows_schema
    )
    """Per-endpoint price rows (USD) replacing the price table's."""
    max_cost: Annotated[float, Field(ge=0)] | None = None
    """Budget cap in USD for the remaining jobs (--max-cost overrides it)."""

    @field_validator("clips", "images", mode="before")
    @classmethod
    def _shorthand(cls, value: object) -> object:
        # A bare string is a path, a glob or a URL; spell it out as the entry it stands for.
        if not isinstance(value, list):
            return value
        return [
            ({"url": item} if is_remote(item) else {"path": item})
            if isinstance(item, str)
            else item
            for item in value
        ]


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of a manifest (for editors: ``# yaml-language-server: $schema=...``)."""
    return Manifest.model_json_schema()


def _load(path: Path) -> tuple[Manifest, dict[Loc, int]]:
    data, lines = _read_yaml(path)
    try:
        return Manifest.model_validate(data), lines
    except ValidationError as exc:
        problems = _Problems(str(path), lines)
        for issue in issues_from(exc, Manifest):
            problems.add(issue.loc, issue.message)
        problems.raise_if_any()
        raise  # pragma: no cover - raise_if_any always raises when there were issues


def load_manifest(path: Path) -> Manifest:
    """Parse and validate a manifest's structure; raises ``ManifestError``."""
    return _load(path)[0]


# --------------------------------------------------------------------------- problems


class _Problems:
    """Every problem found, deduplicated, with its line; raised together at the end."""

    def __init__(self, file: str, lines: Mapping[Loc, int]) -> None:
        self.file = file
        self.lines = lines
        self._found: dict[object, list[Any]] = {}  # key -> [Problem, count of more alike]

    def line(self, loc: Loc) -> int | None:
        """The line of ``loc`` or of its nearest ancestor that the file spells out."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return None

    def add(self, loc: Loc, message: str, *, alike: object = None) -> None:
        """Record a problem at ``loc``; those sharing an ``alike`` key are counted, not listed."""
        problem = Problem(self.file, self.line(loc), format_loc(loc), message)
        key = problem if alike is None else alike
        if key in self._found:
            self._found[key][1] += alike is not None
        else:
            self._found[key] = [problem, 0]

    def raise_if_any(self) -> None:
        """Raise one ManifestError listing everything found (the first few in full)."""
        if not self._found:
            return
        found = [
            Problem(
                p.file, p.line, p.field, p.message + (f" ({more} more like this)" if more else "")
            )
            for p, more in self._found.values()
        ]
        found.sort(key=lambda p: p.line or 0)
        if len(found) > MAX_SHOWN_PROBLEMS:
            rest = len(found) - MAX_SHOWN_PROBLEMS
            found = [
                *found[:MAX_SHOWN_PROBLEMS],
                Problem(self.file, None, "", f"... and {rest} more"),
            ]
        raise ManifestError(found)


# --------------------------------------------------------------------------- the plan


def plan(
    path: Path,
    *,
    output_dir: Path | None = None,
    probe_media: bool = True,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    probe_remote: bool = False,
) -> Plan:
    """Expand the manifest at ``path`` into jobs; raises ``ManifestError`` with every problem.

    ``only``/``exclude`` are fnmatch patterns matched against each job's clip/image id and
    prompt name (see ``plans.is_selected``). ``probe_media`` reads local media headers
    (durations, kinds); ``probe_remote`` also asks each http(s) source for its type and size
    (the only time planning touches the network). ``plan_cache.cached_plan`` is the same
    with the expansion remembered.
    """
    manifest, lines = _load(path)
    planner = _Planner(manifest, path, lines, probe_media=probe_media, probe_remote=probe_remote)
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
    )
    return whole.selected(only, exclude)


@dataclass(frozen=True, slots=True)
class _Layer:
    """Input values from one place in the manifest (``loc``), local files already hashed."""

    values: Mapping[str, Any]
    loc: Loc
    files: Mapping[str, LocalFile] = field(default_factory=dict)
    matrix: bool = False  # one matrix value: loc is ("matrix", field, index)

    def origin(self, issue_loc: Loc) -> Loc:
        """Where in the manifest an issue about ``issue_loc`` (an input field path) is."""
        return (*self.loc, *issue_loc[1:]) if self.matrix else (*self.loc, *issue_loc)


@dataclass(frozen=True, slots=True)
class _Source:
    """One clip or image after globbing: its id, kind, and the reference a job sends."""

    id: str
    kind: MediaKind
    loc: Loc
    entry: SourceEntry
    reference: str  # a URL, or the local file's placeholder
    shown: str  # as the manifest spells it (a matched path for a glob)
    file: LocalFile | None = None


@dataclass(frozen=True, slots=True)
class _Template:
    text: str
    loc: Loc
    usable: bool = True  # False when the template itself is wrong: nothing is rendered


@dataclass
class _Group:
    """Jobs that share an endpoint, a source, input layers, a matrix, prompts and a template."""

    loc: Loc
    spec: EndpointSpec
    source: _Source | None
    layers: list[_Layer]
    matrix: list[list[_Layer]]
    prompts: list[str | None]
    template: _Template

    @property
    def source_field(self) -> str | None:
        """The input field the group's clip or image goes into (None: no source)."""
        return None if self.source is None else self.spec.source_field_for(self.source.kind)

    @property
    def size(self) -> int:
        """How many jobs the group expands to."""
        return len(self.prompts) * math.prod(len(values) for values in self.matrix)


_UNPRICED = object()


class _Combo(NamedTuple):
    """One matrix combination of a group: validated input (None if invalid), cost, files,
    and the template variables all its jobs share."""

    base: dict[str, Any] | None
    cost: float | None
    files: dict[str, LocalFile]
    shas: tuple[str, ...]  # of ``files``: what a job's column holds
    labels: dict[str, Any]  # shared by the combination's jobs: never modified
    variables: dict[str, Any]


# A job while it is being planned: (index, its group's place in the manifest, clip/image id,
# prompt name, matrix values); enough to name it in a problem.
_JobId = tuple[int, Loc, str | None, str | None, Mapping[str, Any]]


class _Vars(dict[str, Any]):
    """Template values; a field the job does not set renders as ``none``."""

    def __missing__(self, key: str) -> str:
        return NONE


class _Planner:
    """One expansion of one manifest: sources, groups, jobs, and the problems met on the way."""

    def __init__(
        self,
        manifest: Manifest,
        path: Path,
        lines: Mapping[Loc, int],
        *,
        probe_media: bool,
        probe_remote: bool,
    ) -> None:
        self.manifest = manifest
        self.base_dir = path.parent
        self.problems = _Problems(str(path), lines)
        self.probe_media = probe_media
        self.probe_remote = probe_remote
        self.applied: dict[tuple[str, str], Limit] = {}
        self.prices: PriceTable = DEFAULT_PRICES.with_overrides(manifest.prices)
        self._files: dict[str, LocalFile | None] = {}
        self.globbed: list[tuple[str, tuple[str, ...]]] = []
        self._media: dict[tuple[Path | str, str, MediaField], MediaInfo | None] = {}
        self._layers: dict[tuple[Loc, str], _Layer] = {}
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

    def sources(self) -> dict[str, _Source]:
        """Every clip and image by id, globs expanded, local files hashed."""
        found: dict[str, _Source] = {}
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

    def _entry_sources(self, entry: SourceEntry, kind: MediaKind, loc: Loc) -> list[_Source]:
        if entry.url is not None:
            return [_Source(entry.id or _url_id(entry.url), kind, loc, entry, entry.url, entry.url)]
        assert entry.path is not None
        if not any(char in entry.path for char in "*?["):
            file = self._local(entry.path, (*loc, "path"))
            stem = _safe_id(Path(entry.path).stem)
            if file is None:
                return []
            return [_Source(entry.id or stem, kind, loc, entry, file.placeholder, entry.path, file)]
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
                sid = _safe_id(Path(match).stem)
                sources.append(_Source(sid, kind, loc, entry, file.placeholder, shown, file))
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

    def local_inputs(self) -> Iterator[tuple[str, str, int, int]]:
        """(path as named, real path, size, mtime) of each local file the manifest named.

        The path as named, not ``LocalFile.path``: hashes are shared per real file, so that
        may be another name of the same bytes, and a symlink retargeted later must count.
        """
        for reference, file in self._files.items():
            if file is not None:
                yield str(self.base_dir / reference), file.real, file.size, file.mtime_ns

    # ----------------------------------------------------------------- groups

    def groups(self, sources: dict[str, _Source]) -> list[_Group]:
        """The job groups: each source × all prompts × matrix, then each ``jobs:`` entry."""
        manifest = self.manifest
        defaults = _Layer(manifest.defaults, ("defaults",))
        top_matrix = _matrix_layers(manifest.matrix, ("matrix",))
        top_template = (manifest.output, ("output",))
        groups: list[_Group] = []
        for source in sources.values():
            spec = self._endpoint(source.entry.endpoint, source.loc)
            if spec is None or not self._accepts(spec, source, source.loc):
                continue
            layers = [self._shared(defaults, spec), self._own(_input_layer(source), spec)]
            taken = [name for name in top_matrix if spec.takes(name)]
            matrix = [[self._shared(value, spec) for value in top_matrix[name]] for name in taken]
            template = self._template(top_template, source, taken)
            prompts: list[str | None] = list(manifest.prompts)
            groups.append(_Group(source.loc, spec, source, layers, matrix, prompts, template))
        for index, entry in enumerate(manifest.jobs):
            group = self._entry_group(entry, ("jobs", index), sources, defaults, top_template)
            if group is not None:
                groups.append(group)
        return groups

    def _entry_group(
        self,
        entry: JobEntry,
        loc: Loc,
        sources: dict[str, _Source],
        defaults: _Layer,
        top_template: tuple[str | None, Loc],
    ) -> _Group | None:
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
            layers.append(self._own(_input_layer(source), spec))
        layers.append(self._own(_Layer(entry.input, (*loc, "input")), spec))
        own_matrix = _matrix_layers(entry.matrix, (*loc, "matrix"))
        matrix = [[self._own(value, spec) for value in values] for values in own_matrix.values()]
        output = (entry.output, (*loc, "output")) if entry.output else top_template
        template = self._template(output, source, list(own_matrix))
        return _Group(loc, spec, source, layers, matrix, prompts, template)

    def _endpoint(self, endpoint: str | None, loc: Loc) -> EndpointSpec | None:
        endpoint = endpoint or self.manifest.endpoint
        if endpoint is None:
            self.problems.add(
                (*loc, "endpoint"),
                "no endpoint: set endpoint: at the top of the manifest or on this entry",
            )
            return None
        return spec_for(endpoint)

    def _accepts(self, spec: EndpointSpec, source: _Source, loc: Loc) -> bool:
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
                f"{noun} {source.id!r} is {_ARTICLE[source.kind]}, but {spec.id} takes"
                f" {_ARTICLE[spec.source_kind]} ({spec.source_field})"
            )
        self.problems.add(loc, message)
        return False

    def _template(
        self, template: tuple[str | None, Loc], source: _Source | None, matrix: list[str]
    ) -> _Template:
        text, loc = template
        if text is None:  # the default keeps every job of a group apart
            head = "{clip}" if source is not None else "{endpoint}"
            text = head + "/{prompt}" + "".join(f"-{{{name}}}" for name in matrix) + "{ext}"
        problem = _template_problem(text, self.variables)
        if problem is not None:
            self.problems.add(loc, problem)
        return _Template(text, loc, problem is None)

    # ----------------------------------------------------------------- layers

    def _shared(self, layer: _Layer, spec: EndpointSpec) -> _Layer:
        """A layer every job shares (``defaults``, top ``matrix``): fields the endpoint lacks
        are left out for it, and only a field no endpoint takes is an error."""
        taken = {name: value for name, value in layer.values.items() if spec.takes(name)}
        return self._own(_Layer(taken, layer.loc, matrix=layer.matrix), spec, key=layer.loc)

    def _own(self, layer: _Layer, spec: EndpointSpec, *, key: Loc | None = None) -> _Layer:
        """The layer with local files in media fields replaced by their placeholders."""
        cache_key = (key or layer.loc, spec.id)
        resolved = self._layers.get(cache_key)
        if resolved is None:
            files: dict[str, LocalFile] = {}
            values = {
                name: self._media_value(value, spec, name, layer.origin((name,)), files)
                for name, value in layer.values.items()
            }
            resolved = _Layer(values, layer.loc, files, layer.matrix)
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
        self, file: LocalFile | str, shown: str, spec: EndpointSpec, kind: MediaField, loc: Loc
    ) -> MediaInfo | None:
        """Check a local file (or a remote URL, with probe_remote) against ``spec``'s limits,
        once per endpoint; its measured facts, when it was measured."""
        local = isinstance(file, LocalFile)
        key = (file.path if isinstance(file, LocalFile) else file, spec.id, kind)
        if key in self._media:
            return self._media[key]
        limits = limits_for(spec.id, self.manifest.limits.get(spec.id))

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
                self.problems.add(
                    loc,
                    f"{shown} is {_ARTICLE[info.kind]},"
                    f" but {spec.name} needs {_ARTICLE[kind]} here",
                )
                info = None
            measured = kind == "video" and info is not None and info.duration is not None
            seconds = limit("max_source_seconds") if measured else None
            if info is not None and seconds is not None and (info.duration or 0) > seconds.number:
                self.problems.add(
                    loc,
                    f"{shown}: {info.duration or 0:.1f} s long; {spec.name} accepts at most"
                    f" {seconds.number:g} s {seconds.cite}",
                )
        self._media[key] = info
        return info

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
        jobs = _Expansion(self).run(groups)
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


class _Expansion:
    """Turns groups into jobs: one validation per distinct input, then one job per prompt."""

    def __init__(self, planner: _Planner) -> None:
        self.planner = planner
        self.problems = planner.problems
        self.index = 0
        self._validated: dict[tuple[object, ...], dict[str, Any] | None] = {}
        self._prompts: dict[tuple[str, str], bool] = {}
        self._outputs: dict[str, _JobId] = {}
        self._keys: dict[str, _JobId] = {}
        self._prices: dict[tuple[str, int, float | None], float | None] = {}

    def run(self, groups: list[_Group]) -> JobColumns:
        """Every group's jobs, in order, as columns (problems go to the planner's list).

        Columns, not a JobSpec per job: at 100k jobs building the specs (and converting them
        to columns for the plan cache) was a fifth of planning; specs are built on use.
        """
        jobs = JobColumns([], [], [], [], [], [], [], [], [], {})
        for group in groups:
            self._group_jobs(group, jobs)
        return jobs

    def _group_jobs(self, group: _Group, jobs: JobColumns) -> None:
        spec, source = group.spec, group.source
        info = self._source_media(group)
        prompts = self.planner.manifest.prompts
        source_field = group.source_field
        placed = tuple(
            f for f in (source_field, "prompt" if group.prompts != [None] else None) if f
        )
        seconds = info.duration if info is not None else None
        combos = [self._combo(group, combo, placed, seconds) for combo in product(*group.matrix)]
        source_id = source.id if source is not None else None
        for combo in combos:
            jobs.local_files.update(combo.files)
        for prompt in group.prompts:
            text = prompts[prompt] if prompt is not None else None
            prompt_ok = prompt is None or text is None or self._prompt_ok(spec, prompt, text)
            for combo in combos:
                index = self.index
                self.index += 1
                if combo.base is None or not prompt_ok:
                    continue
                arguments = dict(combo.base)
                if text is not None:
                    arguments["prompt"] = text
                if source_field is not None and source is not None:
                    arguments[source_field] = source.reference
                key = job_key(spec.id, arguments)
                job = (index, group.loc, source_id, prompt, combo.labels)
                output = self._output(group, combo, key, job)
                if output is not None:
                    jobs.keys.append(key)
                    jobs.endpoints.append(spec.id)
                    jobs.arguments.append(arguments)
                    jobs.outputs.append(output)
                    jobs.files.append(combo.shas)
                    jobs.clips.append(source_id)
                    jobs.prompts.append(prompt)
                    jobs.labels.append(combo.labels)
                    jobs.costs.append(combo.cost)

    def _price(self, endpoint: str, base: dict[str, Any], seconds: float | None) -> float | None:
        # Validated inputs are cached per distinct input (``_validate``), so one base dict
        # object, hence one price, serves every group that shares the input and length.
        found = self._prices.get((endpoint, id(base), seconds), _UNPRICED)
        if found is _UNPRICED:
            found = self._prices[(endpoint, id(base), seconds)] = self.planner.prices.estimate(
                endpoint, base, seconds
            )
        return found  # type: ignore[return-value]

    def _combo(
        self,
        group: _Group,
        combo: tuple[_Layer, ...],
        placed: tuple[str, ...],
        seconds: float | None,
    ) -> _Combo:
        """What every prompt's job of one matrix combination shares."""
        layers = [*group.layers, *combo]
        base = self._validate(group, layers, placed)
        cost = self._price(group.spec.id, base, seconds) if base else None
        files: dict[str, LocalFile] = {}
        for layer in layers:
            files.update(layer.files)
        if group.source is not None and group.source.file is not None:
            files[group.source.file.sha256] = group.source.file
        labels = {str(layer.loc[-2]): next(iter(layer.values.values())) for layer in combo}
        source = group.source
        variables = dict(base or {})
        if source is not None and group.source_field is not None:
            variables[group.source_field] = source.reference
        variables.update(
            clip=source.id if source is not None else NONE,
            image=source.id if source is not None else NONE,
            endpoint=group.spec.name,
            ext=group.spec.output_ext(variables),
        )
        return _Combo(base, cost, files, tuple(files), labels, variables)

    def _source_media(self, group: _Group) -> MediaInfo | None:
        source = group.source
        if source is None:
            return None
        measured = source.file or source.reference
        return self.planner.check_media(measured, source.shown, group.spec, source.kind, source.loc)

    def _validate(
        self, group: _Group, layers: list[_Layer], placed: tuple[str, ...]
    ) -> dict[str, Any] | None:
        # Layers are built once per manifest place, so their identity names the input; an
        # empty layer (most sources have no input of their own) changes nothing.
        cache_key = (group.spec.id, placed, *(id(layer) for layer in layers if layer.values))
        if cache_key in self._validated:
            return self._validated[cache_key]
        merged: dict[str, Any] = {}
        for layer in layers:
            merged.update(layer.values)
        for name in placed:
            merged[name] = _STAND_IN_PROMPT if name == "prompt" else _STAND_IN_FILE
        arguments, issues = group.spec.validate(merged)
        for issue in issues:
            self._report(group, layers, issue)
        self._validated[cache_key] = arguments
        return arguments

    def _report(self, group: _Group, layers: list[_Layer], issue: Issue) -> None:
        name = issue.loc[0] if issue.loc else None
        origin = next((layer for layer in reversed(layers) if name in layer.values), None)
        spec = group.spec
        if origin is not None:
            self.problems.add(origin.origin(issue.loc), issue.message)
        elif issue.type == "missing":
            self.problems.add(
                (*group.loc, "input", *issue.loc),
                f"required by {spec.id}; set it in defaults:, this entry's input: or matrix:",
            )
        else:
            self.problems.add((*group.loc, "input", *issue.loc), issue.message)

    def _prompt_ok(self, spec: EndpointSpec, name: str, text: str) -> bool:
        key = (spec.id, name)
        if key not in self._prompts:
            issues = spec.check_field("prompt", text)
            for issue in issues:
                self.problems.add(("prompts", name), f"{issue.message} for {spec.id}")
            self._prompts[key] = not issues
        return self._prompts[key]

    def _output(self, group: _Group, combo: _Combo, key: str, job: _JobId) -> str | None:
        """The job's output path, or None (and a problem) when it may not be written."""
        template = group.template
        if not template.usable:
            return None
        values = _Vars(combo.variables)
        values["prompt"] = job[3] or NONE
        values["key"] = key[:12]
        values["index"] = job[0]
        try:
            rendered = template.text.format_map(values)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
            self.problems.add(
                template.loc, f"cannot render {template.text!r}: {exc}", alike=template
            )
            return None
        problem = _path_problem(rendered)
        if problem is not None:
            self.problems.add(
                template.loc,
                f"{template.text!r} renders {rendered!r}, which {problem}",
                alike=template,
            )
            return None
        # One spelling per file: "a//b", "./a/b" and "a\\b" are all a/b, and case-insensitive
        # file systems (macOS, Windows) would put A.mp4 and a.mp4 in one file.
        path = rendered
        if "\\" in path or "//" in path or "./" in path:
            path = "/".join(
                part for part in path.replace("\\", "/").split("/") if part not in ("", ".")
            )
        first = self._outputs.setdefault(path.casefold(), job)
        if first is not job:
            self.problems.add(
                template.loc,
                f"{_describe(first)} and {_describe(job)} both render to {path!r} with"
                f" template {template.text!r}; add a variable that tells them apart",
                alike=("output", template),
            )
            return None
        first = self._keys.setdefault(key, job)
        if first is not job:
            self.problems.add(
                group.loc,
                f"{_describe(first)} and {_describe(job)} are the same job (same endpoint,"
                " input and file bytes); remove one",
                alike=("key", group.loc),
            )
            return None
        return path


# --------------------------------------------------------------------------- helpers


def _input_layer(source: _Source) -> _Layer:
    return _Layer(source.entry.input, (*source.loc, "input"))


def _matrix_layers(matrix: Mapping[str, list[Any]], loc: Loc) -> dict[str, list[_Layer]]:
    return {
        name: [
            _Layer({name: value}, (*loc, name, i), matrix=True) for i, value in enumerate(values)
        ]
        for name, values in matrix.items()
    }


def _url_id(url: str) -> str:
    if url.startswith("data:"):
        return "data"
    stem = url.split("?", 1)[0].split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return _safe_id(stem.rpartition(".")[0] or stem) or "url"


def _safe_id(text: str) -> str:
    return _UNSAFE_ID_CHARS.sub("_", text).strip("_") or "file"


def _describe(job: _JobId) -> str:
    _index, loc, source_id, prompt, labels = job
    matrix = ", ".join(f"{name}={value}" for name, value in labels.items())
    described = f"{source_id or NONE} × {prompt or NONE}" + (f" ({matrix})" if matrix else "")
    return f"{format_loc(loc)} ({described})" if loc[0] == "jobs" else described


@functools.lru_cache(maxsize=256)
def _template_problem(text: str, known: frozenset[str]) -> str | None:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        return f"{text!r} is not a valid template: {exc} (write {{{{ and }}}} for braces)"
    for _literal, name, _spec, _conversion in parsed:
        if name is None:
            continue
        if name == "" or not name.isidentifier():
            return f"{text!r}: {{{name}}} is not a template variable (use names like {{clip}})"
        if name not in known:
            return f"{text!r}: unknown variable {{{name}}}{did_you_mean(name, known)}"
    return _path_problem(text.replace("{", "").replace("}", ""), template=True)


def _path_problem(rendered: str, *, template: bool = False) -> str | None:
    """Why an output path may not be written inside output_dir, or None."""
    if (
        not template
        and rendered[:1] not in ("", "/", "\\")
        and rendered[1:2] != ":"
        and ".." not in rendered
        and "\0" not in rendered
        and rendered[-1] not in "/\\."
    ):
        return None  # the common case, decided without splitting
    if "\0" in rendered:
        return "contains a NUL character"
    if rendered.startswith(("/", "\\")) or _DRIVE.match(rendered):
        return "is absolute; outputs are written inside output_dir"
    parts = _SEPARATORS.split(rendered)
    if ".." in parts:
        return "climbs out of output_dir with '..'"
    if not template and (not parts[-1].strip() or parts[-1] == "."):
        return "has no file name"
    return None
