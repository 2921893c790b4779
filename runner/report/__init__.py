"""What a user reads about a batch: ``plan``/``status`` summaries, ``results.jsonl``,
progress while it runs, and the review page."""

from __future__ import annotations

from ._names import OutputNames, adopt_plain_files, output_names
from ._progress import Progress
from ._results import result_record, write_results
from ._review import extract_poster, write_review_page
from ._summary import (
    clip_warnings,
    clips_summary,
    format_plan,
    format_status,
    jobs_to_submit,
    plan_summary,
    remaining_cost,
    source_notes,
    status_summary,
    unpriced_remaining,
)

__all__ = (
    "OutputNames",
    "Progress",
    "adopt_plain_files",
    "clip_warnings",
    "clips_summary",
    "extract_poster",
    "format_plan",
    "format_status",
    "jobs_to_submit",
    "output_names",
    "plan_summary",
    "remaining_cost",
    "result_record",
    "source_notes",
    "status_summary",
    "unpriced_remaining",
    "write_results",
    "write_review_page",
)
