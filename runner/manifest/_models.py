"""The manifest's structure as pydantic models, and its JSON Schema."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    field_validator,
)
from pydantic.config import JsonDict

from ..endpoints import (
    LimitOverrides,
    Loc,
    PriceOverride,
    Ruled,
    Violation,
    endpoint_problem,
    is_endpoint_id,
    issues_from,
)
from ..media import (
    is_remote,
    reference_problem,
)
from ._problems import Problems
from ._types import MAX_TAKES, NAME
from ._yaml import read_yaml

# --------------------------------------------------------------------------- the manifest


def _check_name(value: str) -> str:
    # One spelling per name: ids from file names are NFC too (see ``safe_id``).
    value = unicodedata.normalize("NFC", value)
    if not NAME.fullmatch(value):
        raise ValueError(f"{value!r} may only contain letters, digits, '.', '_' and '-'")
    return value


def _check_endpoint(value: str) -> str:
    if not is_endpoint_id(value):
        raise ValueError(f"{value!r} is not a fal endpoint id (owner/app[/path])")
    return value


def _one_or_many(value: object) -> object:
    return [value] if isinstance(value, dict) else value


def _endpoint_violations(endpoint: str | None, passthrough: bool) -> Iterator[Violation]:
    """An unknown endpoint needs ``passthrough: true`` beside it (see ``endpoint_problem``)."""
    if endpoint is None:
        if passthrough:
            yield "passthrough", "passthrough: true applies to an endpoint: given beside it"
        return
    problem = endpoint_problem(endpoint, passthrough)
    if problem is not None:
        yield "endpoint", problem


Name = Annotated[str, Field(max_length=200), AfterValidator(_check_name)]
#: Independent renders of the same input: each take is a job of its own (the take number
#: is part of its key, never sent).
Takes = Annotated[int, Field(ge=1, le=MAX_TAKES)]
#: ``looks``: every video render waits for a person to approve its look frame first.
Gate = Literal["looks", "none"]
EndpointId = Annotated[str, AfterValidator(_check_endpoint)]
Values = Annotated[list[Any], Field(min_length=1)]
Matrix = dict[str, Values]
#: ``prices:`` (a manifest's block, or a --prices file): endpoint -> one row or a list.
PriceBlock = dict[EndpointId, Annotated[list[PriceOverride], BeforeValidator(_one_or_many)]]
#: ``limits:``: endpoint -> the limits it overrides.
LimitBlock = dict[EndpointId, LimitOverrides]


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


_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0}
_SPAN_PATTERN = r"^\s*(\d+(\.\d+)?h)?(\d+(\.\d+)?m)?(\d+(\.\d+)?s)?\s*$"
_SPAN = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def _seconds(value: object) -> object:
    """``2h``, ``90m``, ``1h30m``, ``45s`` or a plain number of seconds, as seconds."""
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        found = _SPAN.fullmatch(text)
        if not text or found is None:
            try:
                return float(text)
            except ValueError:
                raise ValueError(f"{value!r} is not a length such as 2h, 90m or 45s") from None
        return sum(
            float(n) * unit for n, unit in zip(found.groups(), _UNITS.values(), strict=True) if n
        )
    return value


#: A length of time: seconds, or text such as ``2h``, ``90m``, ``1h30m``.
Span = Annotated[
    float,
    BeforeValidator(_seconds),
    Field(gt=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string", "pattern": _SPAN_PATTERN},
            ]
        }
    ),
]


class Segments(_Entry):
    """How a video-to-video clip longer than one render is cut into renders, kept in one
    look, and stitched back with its sound (``segments:``, at the top or on a clip)."""

    length: Literal["auto", "5s", "10s"] = "auto"
    """Render length: auto (the cheapest exact cover by the price table), 5s or 10s; a
    duration: in the job's input sets it too."""
    cut: Literal["fixed", "shots"] = "fixed"
    """fixed: segments one after another; shots: no segment crosses a shot change."""
    overlap: Annotated[int, Field(ge=0, le=149)] = 0
    """Frames rendered by both segments at each seam, blended in the stitch."""
    continuity: Literal["none", "anchor", "chain"] = "anchor"
    """anchor: every segment starts from a Uni-1 edit of its first frame in the clip's
    look; chain: each from the previous render's frame; none: independent renders."""
    audio: Literal["source", "none"] = "source"
    """source: the stitched file carries the source's sound; none: silent."""
    max_source: Span = 7200.0
    """The longest clip accepted (seconds, or 2h, 90m...); default 2h."""

    def over(self, top: Segments) -> Segments:
        """These settings over ``top``'s: the fields this block sets win."""
        return top.model_copy(update={name: getattr(self, name) for name in self.model_fields_set})


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
    passthrough: bool = False
    """This entry's endpoint: is one raybatch does not know: send its input unchecked."""
    input: dict[str, Any] = {}
    """Endpoint input for this source's jobs, over defaults:."""
    takes: Takes | None = None
    """Takes of each of this source's jobs, instead of the manifest's takes:."""
    gate: Gate | None = None
    """This source's renders wait for an approved look (looks) or not (none)."""
    segments: Segments | None = None
    """How this clip is cut into renders when longer than one, over the top segments:."""

    @field_validator("url")
    @classmethod
    def _remote(cls, value: str | None) -> str | None:
        problem = None if value is None else reference_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    def violations(self) -> Iterator[Violation]:
        """Exactly one of path and url; an unknown endpoint needs passthrough: true."""
        yield from super().violations()
        if (self.path is None) == (self.url is None):
            yield "path", "give exactly one of path: (a local file or glob) and url:"
        yield from _endpoint_violations(self.endpoint, self.passthrough)


class JobEntry(_Entry):
    """One ``jobs:`` entry: an irregular job, or a small family of them via ``matrix``."""

    endpoint: EndpointId | None = None
    """The endpoint, if not the source's or the manifest's."""
    passthrough: bool = False
    """This entry's endpoint: is one raybatch does not know: send its input unchecked."""
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
    takes: Takes | None = None
    """Takes of each of this entry's jobs, instead of the source's or the manifest's."""
    gate: Gate | None = None
    """This entry's renders wait for an approved look (looks) or not (none)."""

    def violations(self) -> Iterator[Violation]:
        """At most one source reference and one way of naming prompts; an unknown endpoint
        needs passthrough: true."""
        yield from super().violations()
        if self.clip is not None and self.image is not None:
            yield "image", "give clip: or image:, not both"
        if self.prompt is not None and self.prompts is not None:
            yield "prompts", "give prompt: or prompts:, not both"
        yield from _endpoint_violations(self.endpoint, self.passthrough)


class Manifest(_Entry):
    """A raybatch manifest: what to render, with which endpoint, into which files."""

    name: Name
    """Names the batch and its default output directory, outputs/<name>."""
    endpoint: EndpointId | None = None
    """The fal endpoint of every job that does not name its own."""
    passthrough: bool = False
    """endpoint: is one raybatch does not know: send its input unchecked (and unpriced)."""
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
    limits: LimitBlock = {}
    """Per-endpoint overrides of the limits table."""
    prices: PriceBlock = Field(default={}, json_schema_extra=_price_rows_schema)
    """Per-endpoint price rows (USD) replacing the price table's."""
    max_cost: Annotated[float, Field(ge=0)] | None = None
    """Budget cap in USD for the remaining jobs (--max-cost overrides it)."""
    takes: Takes = 1
    """Independent takes of every job (each a render of its own, paid): {take} names them."""
    gate: Gate = "none"
    """looks: each video render first makes a look frame (a Uni-1 edit of the clip's first
    frame with the prompt) and waits until you approve it (raybatch review)."""
    segments: Segments = Segments()
    """How video-to-video clips longer than one render are cut, kept in one look and
    stitched back with their sound."""
    confirm_above: Annotated[float, Field(ge=0)] | None = None
    """On a terminal, run asks before starting jobs estimated above this many USD (default
    20; --confirm-above overrides it, --yes skips the question)."""
    on_bad_source: Literal["stop", "skip"] = "stop"
    """A clip or image that cannot be used (unreadable, not media, too long, an id taken):
    stop before anything runs (the default), or skip it and render the rest (--skip-bad)."""

    def violations(self) -> Iterator[Violation]:
        """An unknown top-level endpoint needs passthrough: true."""
        yield from super().violations()
        yield from _endpoint_violations(self.endpoint, self.passthrough)

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


def load(path: Path) -> tuple[Manifest, dict[Loc, int]]:
    """The manifest at ``path``, validated, and each field path's line; raises ManifestError."""
    data, lines = read_yaml(path)
    try:
        return Manifest.model_validate(data), lines
    except ValidationError as exc:
        problems = Problems(str(path), lines)
        for issue in issues_from(exc, Manifest):
            problems.add(issue.loc, issue.message)
        problems.raise_if_any()
        raise  # pragma: no cover - raise_if_any always raises when there were issues
