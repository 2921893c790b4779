"""What a user reads about a batch: ``plan``/``status`` summaries, ``results.jsonl``,
progress while it runs, and the review page."""

from __future__ import annotations

from ._previews import extract_poster
from ._progress import Progress
from ._results import result_record, write_results
from ._review import write_review_page
from ._summary import (
    format_plan,
    format_status,
    plan_summary,
    remaining_cost,
    status_summary,
    unpriced_remaining,
)

__all__ = (
    "Progress",
    "extract_poster",
    "format_plan",
    "format_status",
    "plan_summary",
    "remaining_cost",
    "result_record",
    "status_summary",
    "unpriced_remaining",
    "write_results",
    "write_review_page",
)
