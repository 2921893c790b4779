"""From a YAML manifest to the list of jobs it asks for, or every reason it cannot be run.

``plan`` parses and checks the manifest's structure, then expands its clips and
images × prompts × matrix (plus its explicit ``jobs:``) into ``JobSpec``\\ s, validating
every input against its endpoint's model, hashing local files (a job's key covers their
bytes), checking media against the limits table and pricing each job. Every problem is
reported with the manifest's file, line and field path, all at once, in one
``ManifestError``. Nothing here touches the state, nor the network unless asked to
(``probe_remote``).
"""

from __future__ import annotations

from ..errors import MAX_SHOWN_PROBLEMS
from ._clips import with_decode_checks
from ._models import JobEntry, Manifest, SourceEntry, load, manifest_schema
from ._overrides import PriceFile, load_overrides, manifest_overrides
from ._planner import plan
from ._yaml import MAX_JOBS

__all__ = (
    "MAX_JOBS",
    "MAX_SHOWN_PROBLEMS",
    "JobEntry",
    "Manifest",
    "PriceFile",
    "SourceEntry",
    "load",
    "load_overrides",
    "manifest_overrides",
    "manifest_schema",
    "plan",
    "with_decode_checks",
)
