"""What a user reads about a batch: ``plan``/``status`` summaries, ``results.jsonl``,
progress while it runs, and the review page."""

from __future__ import annotations

import typing

from .._lazy import lazy_names as _lazy_names
from ._judging import Judgeable, group_of, reroll_ops, verdict_counts
from ._names import OutputNames, adopt_plain_files, output_names
from ._results import result_record, write_results
from ._summary import (
    clip_warnings,
    clips_summary,
    format_plan,
    format_status,
    plan_summary,
    source_notes,
    status_summary,
    to_submit,
    unpriced_remaining,
)

if typing.TYPE_CHECKING:
    from ._previews import extract_poster
    from ._progress import Progress
    from ._review import write_review_page
    from ._server import ReviewSession, review_app, serve_review
    from ._show import find_job, format_story, job_story

#: Names whose modules load media, web-server or pipeline code: imported on first use, so
#: ``status`` and ``plan`` start without them (half a second of imports on this machine).
_LAZY = {
    "extract_poster": "_previews",
    "Progress": "_progress",
    "write_review_page": "_review",
    "ReviewSession": "_server",
    "review_app": "_server",
    "serve_review": "_server",
    "find_job": "_show",
    "format_story": "_show",
    "job_story": "_show",
}


__getattr__, __dir__ = _lazy_names(__name__, _LAZY, globals())

__all__ = (
    "Judgeable",
    "OutputNames",
    "Progress",
    "ReviewSession",
    "adopt_plain_files",
    "clip_warnings",
    "clips_summary",
    "extract_poster",
    "find_job",
    "format_plan",
    "format_status",
    "format_story",
    "group_of",
    "job_story",
    "output_names",
    "plan_summary",
    "to_submit",
    "reroll_ops",
    "result_record",
    "review_app",
    "serve_review",
    "source_notes",
    "status_summary",
    "unpriced_remaining",
    "verdict_counts",
    "write_results",
    "write_review_page",
)
