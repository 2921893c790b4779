"""The pieces of the review page: how a file is linked, a job's card, its medium, its
parameters, cost and verdict. Every text that came from a manifest, from fal or from a
person (prompts, ids, file names, errors, notes) goes through :func:`html.escape`."""

from __future__ import annotations

import html
import mimetypes
import os
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..job import LOCAL_PREFIX, JobSpec, LocalFile, canonical_json, substitute
from ..state import ShownRow
from ._summary import human_size

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".webm"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
#: What the media slot says for a job without a result yet.
WAITING = {
    "new": "not run yet",
    "blocked": "waiting for its inputs",
    "pending": "waiting",
    "submitting": "submitting",
    "queued": "queued at fal",
    "running": "rendering at fal",
    "completed": "downloading",
    "failed": "failed",
    "cancelled": "cancelled",
    "done": "no output file",
}
#: Job states the page knows how to colour; anything else is shown as it is, uncoloured.
KNOWN_STATES = frozenset(WAITING)
NO_PROMPT = "(none)"


@dataclass(frozen=True)
class Links:
    """How the page names files: relative paths for a page on disk (``served`` False), or
    the review server's routes (``files/…`` under the output directory, ``sources/…``)."""

    root: Path  # the output directory
    served: bool = False

    def output(self, path: str) -> str:
        """A file under the output directory (a result, a poster)."""
        return ("files/" if self.served else "") + href(path)

    def source(self, local: LocalFile) -> str:
        """A local source file, wherever it is."""
        if self.served:
            return f"sources/{local.sha256}/{href(local.path.name)}"
        return href(Path(os.path.relpath(local.path.absolute(), self.root)).as_posix())


@dataclass(frozen=True)
class Media:
    """A file to show: its URL relative to the page, its kind and its poster's URL."""

    href: str
    kind: str | None
    poster: str | None = None


def e(text: str) -> str:
    """``text`` safe to put in HTML, attributes included."""
    return html.escape(text, quote=True)


def href(path: str) -> str:
    """A relative URL for a POSIX path: every character that means something in URLs quoted."""
    return urllib.parse.quote(path, safe="/")


def kind_of_output(path: str) -> str | None:
    """What a result file is, by its extension (the name raybatch gave it)."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return "image" if suffix in IMAGE_EXTENSIONS else None


def kind_of(name: str, content_type: str | None = None) -> str | None:
    """``video``, ``image`` or None, by content type or name."""
    kind = (content_type or mimetypes.guess_type(name)[0] or "").split("/")[0]
    return kind if kind in ("video", "image") else None


def state_class(state: str) -> str:
    """The CSS class suffix of a state (``other`` for one the page does not know)."""
    return state if state in KNOWN_STATES else "other"


def select(name: str, label: str, options: Iterable[tuple[str, str, str | None]]) -> str:
    """A filter: a <select> with "all" and ``options`` (value, text, tooltip)."""
    parts = [f'<label>{e(label)} <select id="f-{name}"><option value="">all</option>']
    for value, text, title in options:
        tip = f' title="{e(title)}"' if title else ""
        parts.append(f'<option value="{e(value)}"{tip}>{e(text)}</option>')
    parts.append("</select></label>")
    return "".join(parts)


def remote(url: str) -> str:
    """A link to a remote source (never embedded: the page must work offline)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        return '<p class="missing">inline data source</p>'
    return f'<a class="file" href="{e(url)}" rel="noreferrer noopener">{e(url)}</a>'


def params(spec: JobSpec, source_field: str | None, hidden: frozenset[str] = frozenset()) -> str:
    """The job's input apart from its prompt, its source and ``hidden`` fields, local
    files by name and other jobs' outputs by what they are."""
    names = {sha: local.path.name for sha, local in spec.files.items()}

    def readable(text: str) -> str:
        if text.startswith(LOCAL_PREFIX):
            return names.get(text.removeprefix(LOCAL_PREFIX), "local file")
        if text.startswith("@job:"):
            return f"output of job {text[5:17]}"
        return text

    items = []
    for key, value in spec.arguments.items():
        if key in ("prompt", source_field) or key in hidden or value is False:
            continue  # an option left off says nothing worth the room
        shown = substitute(value, readable)
        text = shown if isinstance(shown, str) else canonical_json(shown)
        items.append(f"<dt>{e(key)}</dt><dd>{e(text)}</dd>")
    if spec.take != 1:
        items.append(f"<dt>take</dt><dd>{spec.take}</dd>")
    return f'<dl class="params">{"".join(items)}</dl>' if items else ""


def files(outputs: list[dict[str, Any]], links: Links) -> str:
    """Links to every output file of a job (an EXR archive beside the video, say)."""
    found = []
    for output in outputs:
        path = str(output.get("path", ""))
        size = output.get("size")
        shown = PurePosixPath(path).name + (f" ({human_size(size)})" if size else "")
        found.append(f'<a href="{e(links.output(path))}">{e(shown)}</a>')
    return f'<p class="files">{" · ".join(found)}</p>'


def cost(spec: JobSpec, row: ShownRow | None) -> str:
    """Estimated cost, billable units, attempts and request id."""
    parts = ["no price" if spec.estimated_cost is None else f"est. ${spec.estimated_cost:.2f}"]
    if row is not None:
        if row.billable_units is not None:
            parts.append(f"{row.billable_units:g} billable units")
        if row.attempts > 1:
            parts.append(f"{row.attempts} attempts")
        if row.request_id:
            parts.append(f'<span class="rid" title="fal request id">{e(row.request_id)}</span>')
    return " · ".join(parts)


def verdict_block(row: ShownRow | None, judge: str, rolled: int | None, live: bool) -> str:
    """A judgeable card's verdict, note and (served) controls."""
    if not judge:
        return ""
    verdict = row.verdict if row is not None else None
    shown = verdict or ("not judged yet" if judge == "todo" else "")
    parts = [
        f'<p class="verdict"><span class="vbadge v-{e(verdict or "none")}">{e(shown)}</span>'
        f'<span class="rolled">{f"rolled again as take {rolled}" if rolled else ""}</span></p>'
    ]
    note = row.note if row is not None and row.note else ""
    parts.append(f'<p class="note"{"" if note else " hidden"}>{e(note)}</p>')
    if live:
        parts.append(
            '<div class="judge">'
            '<button type="button" data-act="approved" title="approve (a)">approve</button>'
            '<button type="button" data-act="rejected" title="reject (r)">reject</button>'
            '<button type="button" data-act="clear" title="clear the verdict (u)">clear</button>'
            '<button type="button" data-act="note" title="note (n)">note</button>'
            '<button type="button" data-act="reroll" title="one more take">reroll</button>'
            "</div>"
        )
    return "".join(parts)
