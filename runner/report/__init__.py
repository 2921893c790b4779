"""What a user reads about a batch: ``plan``/``status`` summaries, ``results.jsonl``,
progress while it runs, and the review page."""

from __future__ import annotations

from ._judging import Judgeable, group_of, reroll_ops, verdict_counts
from ._posters import extract_poster
from ._progress import Progress
from ._results import result_record, write_results
from ._review import write_review_page
from ._server import ReviewSession, review_app, serve_review
from ._show import find_job, format_story, job_story
from ._summary import (
    format_plan,
    format_status,
    plan_summary,
    remaining_cost,
    status_summary,
    unpriced_remaining,
)

__all__ = (
    "ReviewSession",
    "Judgeable",
    "group_of",
    "reroll_ops",
    "Progress",
    "extract_poster",
    "find_job",
    "format_story",
    "format_plan",
    "format_status",
    "job_story",
    "plan_summary",
    "remaining_cost",
    "result_record",
    "review_app",
    "serve_review",
    "status_summary",
    "verdict_counts",
    "unpriced_remaining",
    "write_results",
    "write_review_page",
)
