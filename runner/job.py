"""A render job as the rest of raybatch sees it, and how its identity is computed.

A job's key is the sha256 of its endpoint and its canonical input, where each local
file appears as ``"@local:<sha256 of its bytes>"``. Moving or renaming a clip keeps
the key; touching one byte of it, the prompt or any parameter makes a new job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOCAL_PREFIX = "@local:"


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


#: ``json.dumps`` with these options builds a new encoder per call; a plan hashes one
#: input per job, so the encoder is made once (same output, byte for byte).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_json(value: Any) -> str:
    """The one JSON spelling of ``value`` that every key is computed from."""
    return _CANONICAL.encode(value)


def job_key(endpoint: str, arguments: Mapping[str, Any]) -> str:
    """The content key of a job: sha256 over endpoint and canonical input."""
    digest = hashlib.sha256()
    digest.update(endpoint.encode())
    digest.update(b"\0")
    digest.update(canonical_json(arguments).encode())
    return digest.hexdigest()


def substitute(value: Any, replace: Callable[[str], str]) -> Any:
    """Return ``value`` with every string passed through ``replace`` (deeply, lists and dicts)."""
    if isinstance(value, str):
        return replace(value)
    if isinstance(value, Mapping):
        return {k: substitute(v, replace) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [substitute(v, replace) for v in value]
    return value


def resolve_arguments(spec: JobSpec, uploaded: Mapping[str, str]) -> dict[str, Any]:
    """The input to send: each ``@local:`` placeholder replaced by its uploaded URL.

    ``uploaded`` maps a file's sha256 to its URL.
    """

    def replace(text: str) -> str:
        if text.startswith(LOCAL_PREFIX):
            return uploaded[text.removeprefix(LOCAL_PREFIX)]
        return text

    resolved = substitute(spec.arguments, replace)
    assert isinstance(resolved, dict)
    return resolved
