"""A job as the rest of raybatch sees it, and how its identity is computed.

A job's key is the sha256 of its endpoint and its canonical input, where each local
file appears as ``"@local:<sha256 of its bytes>"`` and each output of another job (a
*parent*) as ``"@job:<parent key>"`` or ``"@job:<parent key>/<output field>"``. So a key
is computed from the parents' keys, never from their bytes (which differ from take to
take). Moving or renaming a clip keeps the key; touching one byte of it, the prompt or
any parameter makes a new job. A take number above 1 is part of the key and is never
sent to fal.

A job is *remote* (a request to a fal endpoint) or *local* (a step raybatch runs itself,
such as cutting a segment or stitching segments, named ``local/<step>``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

LOCAL_PREFIX = "@local:"
PARENT_PREFIX = "@job:"
#: Endpoints of local steps start with this (``local/stitch``); everything else is fal's.
LOCAL_ENDPOINT_PREFIX = "local/"

Kind = Literal["remote", "local"]
#: The label naming what a job is for beyond a plain render (``look``); shown after the
#: label's brackets, never as a matrix value.
ROLE = "role"
LOOK = "look"

# The fal endpoints raybatch knows (``endpoints`` holds their models, limits and prices),
# with the input field that carries each one's source media (None: it takes none). Kept
# here, apart from the models, for code that only names a job's endpoint or finds its
# source: the review page at the end of a resumed run then loads no pydantic (17 MB).
VIDEO_TO_VIDEO = "luma/agent/ray/v3.2/video-to-video"
TEXT_TO_VIDEO = "luma/agent/ray/v3.2/text-to-video"
IMAGE_TO_VIDEO = "luma/agent/ray/v3.2/image-to-video"
REFRAME = "luma/agent/ray/v3.2/reframe"
TEXT_TO_IMAGE = "luma/agent/uni-1/v1/text-to-image"
EDIT_IMAGE = "luma/agent/uni-1/v1/edit"
SOURCE_FIELDS: Mapping[str, str | None] = {
    VIDEO_TO_VIDEO: "video_url",
    TEXT_TO_VIDEO: None,
    IMAGE_TO_VIDEO: "image_url",
    REFRAME: "video_url",
    TEXT_TO_IMAGE: None,
    EDIT_IMAGE: "image_url",
}


def endpoint_name(endpoint: str) -> str:
    """The last segment of an endpoint id, e.g. ``video-to-video``."""
    return endpoint.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A local file an input refers to; uploaded once per run, whatever the number of jobs."""

    path: Path
    sha256: str
    size: int
    content_type: str
    #: The real path and mtime it had when hashed: a remembered plan holds while they do.
    real: str = ""
    mtime_ns: int = 0

    @property
    def placeholder(self) -> str:
        """The string that stands for this file inside a job's arguments."""
        return LOCAL_PREFIX + self.sha256


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One render: an endpoint, its input, and where its output goes."""

    key: str
    endpoint: str
    arguments: Mapping[str, Any]
    output: str  # relative to the output directory, "/"-separated
    files: Mapping[str, LocalFile] = field(default_factory=dict)
    clip: str | None = None
    prompt: str | None = None
    labels: Mapping[str, Any] = field(default_factory=dict)
    estimated_cost: float | None = None
    #: Keys of the jobs whose outputs this one takes as input (``@job:`` placeholders).
    parents: tuple[str, ...] = ()
    take: int = 1
    #: Estimated seconds of work, for running the longest remaining chain first.
    weight: float = 1.0
    #: Parents (among ``parents``) whose output a person must approve before this job may
    #: run (``gate: looks``): it waits, blocked, for their verdict as well as their output.
    gates: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """A short human name: ``clip/prompt``, its matrix values and take, and the step of
        a local job (``city/noir[edit_strength=flex_1,take=2] (stitch)``)."""
        labels = dict(self.labels)
        if self.take != 1:
            labels.setdefault("take", self.take)
        return job_label(self.endpoint, self.clip, self.prompt, labels)

    @property
    def role(self) -> str | None:
        """What the job is for, when it is not a plain render: ``look`` (a look frame)."""
        role = self.labels.get(ROLE)
        return role if isinstance(role, str) else None

    @property
    def kind(self) -> Kind:
        """``local`` for a step raybatch runs itself, ``remote`` for a fal request."""
        return "local" if self.endpoint.startswith(LOCAL_ENDPOINT_PREFIX) else "remote"


#: ``json.dumps`` with these options builds a new encoder per call; a plan hashes one
#: input per job, so the encoder is made once (same output, byte for byte).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def job_label(
    endpoint: str, clip: str | None, prompt: str | None, labels: Mapping[str, Any]
) -> str:
    """A job's short human name (see ``JobSpec.label``), from what the state keeps too."""
    label = take_group(clip, prompt, labels)
    role = labels.get(ROLE)
    if isinstance(role, str):
        label += f" ({role})"
    elif endpoint.startswith(LOCAL_ENDPOINT_PREFIX):
        label += f" ({endpoint.removeprefix(LOCAL_ENDPOINT_PREFIX)})"
    return label


def take_group(clip: str | None, prompt: str | None, labels: Mapping[str, Any]) -> str:
    """What a job's takes share: ``clip/prompt[matrix values]`` (with ``take=N`` among the
    labels when given, so a label without it names the group, with it one take)."""
    label = f"{clip or '-'}/{prompt or '-'}"
    shown = [f"{k}={v}" for k, v in labels.items() if k != ROLE]
    if shown:
        label += "[" + ",".join(shown) + "]"
    return label


def canonical_json(value: Any) -> str:
    """The one JSON spelling of ``value`` that every key is computed from."""
    return _CANONICAL.encode(value)


def job_key(endpoint: str, arguments: Mapping[str, Any], take: int = 1) -> str:
    """The content key of a job: sha256 over endpoint, canonical input and take (a first
    take hashes as keys always did, so existing state files keep their jobs)."""
    digest = hashlib.sha256()
    digest.update(endpoint.encode())
    digest.update(b"\0")
    digest.update(canonical_json(arguments).encode())
    if take != 1:
        digest.update(f"\0take={take}".encode())
    return digest.hexdigest()


def estimated_work(arguments: Mapping[str, Any]) -> float:
    """A job's relative amount of work: the seconds of media it renders when it says
    (``duration: 10s``), else 1. Only the order it gives matters (critical path first)."""
    duration = arguments.get("duration")
    if isinstance(duration, str) and duration.endswith("s"):
        try:
            return max(float(duration[:-1]), 1.0)
        except ValueError:
            return 1.0
    return 1.0


def parent_ref(key: str, field: str | None = None) -> str:
    """The placeholder for a parent's output (its first file, or the one at ``field``)."""
    return f"{PARENT_PREFIX}{key}" + (f"/{field}" if field else "")


def split_parent_ref(text: str) -> tuple[str, str | None] | None:
    """(parent key, output field or None) of a ``@job:`` placeholder; None for other text."""
    if not text.startswith(PARENT_PREFIX):
        return None
    key, _, field = text.removeprefix(PARENT_PREFIX).partition("/")
    return key, field or None


def substitute(value: Any, replace: Callable[[str], str]) -> Any:
    """Return ``value`` with every string passed through ``replace`` (deeply, lists and dicts)."""
    if isinstance(value, str):
        return replace(value)
    if isinstance(value, Mapping):
        return {k: substitute(v, replace) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(v, replace) for v in value]
    return value


def resolve_arguments(
    spec: JobSpec, uploaded: Mapping[str, str], parents: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The input to send: each ``@local:`` placeholder replaced by its uploaded URL
    (``uploaded`` maps a file's sha256 to its URL) and each ``@job:`` placeholder by the
    URL ``parents`` gives for it."""

    def replace(text: str) -> str:
        if text.startswith(LOCAL_PREFIX):
            return uploaded[text.removeprefix(LOCAL_PREFIX)]
        if parents is not None and text.startswith(PARENT_PREFIX):
            return parents[text]
        return text

    resolved = substitute(spec.arguments, replace)
    assert isinstance(resolved, dict)
    return resolved
