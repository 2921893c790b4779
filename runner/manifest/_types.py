"""What the planner passes between its steps: layers of input, sources, groups of jobs."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ..endpoints import (
    EndpointSpec,
    Loc,
)
from ..job import LocalFile, estimated_work
from ..media import (
    MediaKind,
)

if TYPE_CHECKING:
    from ..plan import JobColumns
    from ._models import SourceEntry


@dataclass(frozen=True, slots=True)
class Layer:
    """Input values from one place in the manifest (``loc``), local files already hashed."""

    values: Mapping[str, Any]
    loc: Loc
    files: Mapping[str, LocalFile] = field(default_factory=dict)
    matrix: bool = False  # one matrix value: loc is ("matrix", field, index)

    def origin(self, issue_loc: Loc) -> Loc:
        """Where in the manifest an issue about ``issue_loc`` (an input field path) is."""
        return (*self.loc, *issue_loc[1:]) if self.matrix else (*self.loc, *issue_loc)


NONE = "none"  # what {clip} and {prompt} render as for a job without one
TEMPLATE_VARIABLES = ("clip", "image", "prompt", "endpoint", "key", "index", "ext", "take")
#: Takes per job at most: a take is a paid render, and dozens are already a lot to judge.
MAX_TAKES = 100
#: Names and ids: letters and digits of any script, '.', '_' and '-' (no separator, no
#: space: an id is a path part of outputs, {clip}/...).
NAME = re.compile(r"[\w.-]+")
UNSAFE_ID_CHARS = re.compile(r"[^\w.-]+")
# Stand-ins for the fields placed per job (the prompt, the clip or image), so that one
# validation serves every prompt and source of a combination; no rule reads those fields.
STAND_IN_PROMPT = "x"
STAND_IN_FILE = "@local:" + "0" * 64
ARTICLE = {"video": "a video", "image": "an image", "unknown": "not a video or image"}


@dataclass(frozen=True, slots=True)
class Source:
    """One clip or image after globbing: its id, kind, and the reference a job sends."""

    id: str
    kind: MediaKind
    loc: Loc
    entry: SourceEntry
    reference: str  # a URL, or the local file's placeholder
    shown: str  # as the manifest spells it (a matched path for a glob)
    file: LocalFile | None = None


@dataclass(frozen=True, slots=True)
class Template:
    text: str
    loc: Loc
    usable: bool = True  # False when the template itself is wrong: nothing is rendered

    @property
    def takes(self) -> bool:
        """Whether the template names the take (else take N gets ``-takeN``)."""
        return "{take}" in self.text or "{take:" in self.text


@dataclass
class Group:
    """Jobs that share an endpoint, a source, input layers, a matrix, prompts and a template."""

    loc: Loc
    spec: EndpointSpec
    source: Source | None
    layers: list[Layer]
    matrix: list[list[Layer]]
    prompts: list[str | None]
    template: Template
    takes: int = 1
    #: ``looks``: each render waits for an approved look frame (see ``_looks``).
    gate: str = "none"
    #: Where the gate was asked for (its manifest place), to name in a problem.
    gate_loc: Loc = ("gate",)

    @property
    def source_field(self) -> str | None:
        """The input field the group's clip or image goes into (None: no source)."""
        return None if self.source is None else self.spec.source_field_for(self.source.kind)

    @property
    def size(self) -> int:
        """How many jobs the group expands to."""
        return self.takes * len(self.prompts) * math.prod(len(values) for values in self.matrix)


UNPRICED = object()


class Combo(NamedTuple):
    """One matrix combination of a group: validated input (None if invalid), cost, files,
    and the template variables all its jobs share."""

    base: dict[str, Any] | None
    cost: float | None
    files: dict[str, LocalFile]
    shas: tuple[str, ...]  # of ``files``: what a job's column holds
    labels: dict[str, Any]  # shared by the combination's jobs: never modified
    variables: dict[str, Any]
    input_key: tuple[object, ...]  # names the distinct validated input (see _input_key)


# A job while it is being planned: (index, its group's place in the manifest, clip/image id,
# prompt name, matrix values, take); enough to name it in a problem.
JobId = tuple[int, Loc, str | None, str | None, Mapping[str, Any], int]


class Vars(dict[str, Any]):
    """Template values; a field the job does not set renders as ``none``."""

    def __missing__(self, key: str) -> str:
        return NONE


#: A job's clip, prompt, labels, cost and take (``append_job``'s positional tail): the
#: columns from its key, endpoint, input, output and files.
PlacedRow = tuple[str | None, str | None, dict[str, Any], float | None, int]


def append_job(
    jobs: JobColumns,
    key: str,
    endpoint: str,
    arguments: dict[str, Any],
    output: str,
    shas: tuple[str, ...],
    clip: str | None,
    prompt: str | None,
    labels: dict[str, Any],
    cost: float | None,
    take: int,
    parents: tuple[str, ...] = (),
    gates: tuple[str, ...] = (),
) -> None:
    """One job at the end of the columns (its weight estimated from its input)."""
    jobs.keys.append(key)
    jobs.endpoints.append(endpoint)
    jobs.arguments.append(arguments)
    jobs.outputs.append(output)
    jobs.files.append(shas)
    jobs.clips.append(clip)
    jobs.prompts.append(prompt)
    jobs.labels.append(labels)
    jobs.costs.append(cost)
    jobs.parents.append(parents)
    jobs.takes.append(take)
    weight = estimated_work(arguments)
    if jobs.weights and jobs.weights[-1] == weight:
        weight = jobs.weights[-1]  # one float for a run of equal weights, not one per job
    jobs.weights.append(weight)
    jobs.gates.append(gates)
