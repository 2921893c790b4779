"""A plan: the jobs a manifest asks for, and the cache that remembers it.

A remembered plan is used again only when its content provably did not change: the
manifest's bytes, raybatch's code, and every file it read or its globs matched.
"""

from __future__ import annotations

from ._cache import cache_dir, cached_plan
from ._jobs import JobColumns, JobList
from ._plan import (
    DEFAULT_OUTPUT_ROOT,
    ClipFacts,
    ClipRender,
    DuplicateSource,
    ManifestFacts,
    Plan,
    PlanInputs,
    SegmentedClip,
    SkippedSource,
    bad_source_hint,
    glob_files,
    output_dir_for,
)
from ._registry import check_default_output_dir, output_dirs, remember

__all__ = (
    "DEFAULT_OUTPUT_ROOT",
    "ClipFacts",
    "ClipRender",
    "DuplicateSource",
    "JobColumns",
    "JobList",
    "ManifestFacts",
    "Plan",
    "PlanInputs",
    "SegmentedClip",
    "SkippedSource",
    "bad_source_hint",
    "cache_dir",
    "cached_plan",
    "check_default_output_dir",
    "glob_files",
    "output_dir_for",
    "output_dirs",
    "remember",
)
