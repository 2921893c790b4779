"""Where a manifest's ``results.jsonl`` and review page go in its output directory.

With one manifest per directory (the usual case) they are ``results.jsonl`` and
``index.html``. Once a second manifest has run into the same directory (the state records
each one that runs), every manifest's files carry its name, ``results.<name>.jsonl`` and
``index.<name>.html``, so that no manifest overwrites another's; the plain files, written
while the first manifest was alone, are renamed to its name at that moment. Two manifests
of one name (from different folders) are told apart by a digest of their paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..plan import Plan

RESULTS, PAGE = "results.jsonl", "index.html"


@dataclass(frozen=True, slots=True)
class OutputNames:
    """A manifest's results file and review page."""

    results: Path
    page: Path


def output_names(plan: Plan, manifests: Mapping[str, str]) -> OutputNames:
    """The files of ``plan``'s manifest, given the manifests the state says ran here
    (resolved path -> name)."""
    here = str(plan.manifest_path.resolve())
    return _names(plan.output_dir, here, plan.facts.name, manifests)


def adopt_plain_files(output_dir: Path, manifests: Mapping[str, str]) -> None:
    """Once two manifests share ``output_dir``, the plain files the first one wrote while it
    was alone take its name (best effort: a rename that fails leaves them as they are)."""
    if len(manifests) < 2:
        return
    first, name = next(iter(manifests.items()))
    named = _names(output_dir, first, name, manifests)
    for plain, target in ((RESULTS, named.results), (PAGE, named.page)):
        if (output_dir / plain).exists() and not target.exists():
            with contextlib.suppress(OSError):
                os.replace(output_dir / plain, target)


def _names(output_dir: Path, path: str, name: str, manifests: Mapping[str, str]) -> OutputNames:
    if not any(other != path for other in manifests):
        return OutputNames(output_dir / RESULTS, output_dir / PAGE)
    namesakes = any(n == name and other != path for other, n in manifests.items())
    tag = f"{name}-{hashlib.sha256(path.encode()).hexdigest()[:8]}" if namesakes else name
    return OutputNames(output_dir / f"results.{tag}.jsonl", output_dir / f"index.{tag}.html")
