"""The review page: ``<output_dir>/index.html``, every source beside its results.

One self-contained file (inline CSS and JS, nothing fetched from the network) that works
from ``file://`` as well as from any static server. Media are referenced by relative path:
results live under the output directory, sources beside the manifest. Video posters are
extracted once per distinct file (named by its sha256) into ``.review/posters/``.

Everything shown that came from a manifest or from fal (prompts, ids, file names, error
messages) is untrusted text and goes through :func:`html.escape`. The page is built as a
list of strings joined once, and media beyond the first screen load only when scrolled to,
so libraries of thousands of jobs stay quick to write and to open.
"""

from __future__ import annotations

import html
import mimetypes
import os
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path, PurePosixPath
from typing import Any

import av

from ..endpoints import spec_for
from ..job import LOCAL_PREFIX, JobSpec, LocalFile, canonical_json, substitute
from ..plan import Plan
from ..state import JobRow, Spend, StateStore
from ._parts import CSS as PARTS_CSS, JS as PARTS_JS, LongClipParts
from ._summary import human_size

#: Where posters go, relative to the output directory.
POSTER_DIR = PurePosixPath(".review/posters")
#: Posters are for thumbnails: no wider than this.
POSTER_WIDTH = 480
#: Media elements that load with the page; the rest load when scrolled near.
EAGER_MEDIA = 24

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".webm"})
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif"})
#: What the media slot says for a job without a result yet.
_WAITING = {
    "new": "not run yet",
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
KNOWN_STATES = frozenset(_WAITING)
NO_PROMPT = "(none)"


def write_review_page(
    plan: Plan, *, posters: int | None = None, target: Path | None = None
) -> Path:
    """Write ``<output_dir>/index.html`` (or ``target``) for ``plan`` and return its path.

    Reads the state file read-only (safe while a run goes on); jobs it does not know yet
    are shown as ``new``. Posters missing for a video are extracted first, at most
    ``posters`` of them (None: all); a video without one shows its own first frame.
    """
    output_dir = plan.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore.open_readonly(output_dir / "state.db")
    try:
        keys = set(plan.keys)
        rows = (
            {} if store is None else {r.key: r for r in store.rows(results=False) if r.key in keys}
        )
        spend = store.spend() if store is not None else None
    finally:
        if store is not None:
            store.close()
    page = _Page(plan, rows, spend)
    page.make_posters(posters)
    text = page.render()
    target = target or output_dir / "index.html"
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, target)
    return target


# --------------------------------------------------------------------------- posters


def extract_poster(video: Path, target: Path, *, width: int = POSTER_WIDTH) -> bool:
    """Write a JPEG of a frame early in ``video`` to ``target``; False if it cannot be read.

    The frame is taken a little way in (a fifth of the clip, at most 2 s): first frames are
    often black or a fade.
    """
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            seconds = container.duration / 1_000_000 if container.duration else 0.0
            wanted = min(2.0, seconds / 5)
            frame = None
            for frame in container.decode(stream):
                if frame.time is None or frame.time >= wanted:
                    break
        if frame is None:
            return False
        w = min(width, frame.width) // 2 * 2
        h = max(2, round(frame.height * w / frame.width / 2) * 2)
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height, encoder.pix_fmt = w, h, "yuvj420p"
        encoder.time_base = Fraction(1, 25)
        encoder.options = {"qmin": "2", "qmax": "4"}
        image = frame.reformat(width=w, height=h, format="yuvj420p")
        data = b"".join(bytes(p) for p in [*encoder.encode(image), *encoder.encode(None)])
    except (av.FFmpegError, IndexError, OSError, ValueError):
        return False
    if not data:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return True


# --------------------------------------------------------------------------- the model


@dataclass
class _Source:
    """What a group of jobs was made from: a local file, a URL, or nothing (text only)."""

    id: str
    title: str
    kind: str | None  # "video", "image", or None when unknown or absent
    local: LocalFile | None = None
    url: str | None = None
    jobs: list[JobSpec] = field(default_factory=list)


@dataclass(frozen=True)
class _Media:
    """A file to show: its URL relative to the page, its kind and its poster's URL."""

    href: str
    kind: str | None
    poster: str | None = None


def _poster_name(sha256: str) -> str:
    return f"{sha256[:32]}.jpg"


def _kind(path: str) -> str | None:
    """What a result file is, by its extension (the name raybatch gave it)."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return "image" if suffix in IMAGE_EXTENSIONS else None


def _kind_of(name: str, content_type: str | None = None) -> str | None:
    kind = (content_type or mimetypes.guess_type(name)[0] or "").split("/")[0]
    return kind if kind in ("video", "image") else None


def _href(path: str) -> str:
    """A relative URL for a POSIX path: every character that means something in URLs quoted."""
    return urllib.parse.quote(path, safe="/")


def _source_field(spec: JobSpec) -> str | None:
    endpoint = spec_for(spec.endpoint)
    if endpoint.source_field is not None:
        return endpoint.source_field
    if endpoint.known:
        return None
    # A pass-through endpoint takes its source in fal's conventional field.
    return next((f for f in ("video_url", "image_url") if f in spec.arguments), None)


class _Page:
    """Everything the page shows, gathered once, then rendered to one string."""

    def __init__(self, plan: Plan, rows: Mapping[str, JobRow], spend: Spend | None) -> None:
        self.plan = plan
        self.rows = rows
        self.spend = spend
        self.root = plan.output_dir
        self.manifest_dir = plan.manifest_path.parent.absolute()
        self.parts = LongClipParts(plan.jobs)
        self.sources = self._group(plan.jobs)
        self.posters: dict[str, str] = {}  # sha256 -> poster URL
        self.media_shown = 0

    def _group(self, jobs: Iterable[JobSpec]) -> list[_Source]:
        groups: dict[tuple[str, str], _Source] = {}
        for spec in jobs:
            if spec.key in self.parts.inside:
                continue  # a long clip's part: shown in its stitched output's card
            reader = self.parts.source(spec) or spec  # a stitch goes with the clip it cut
            name = _source_field(reader) if spec.clip is not None else None
            reference = reader.arguments.get(name) if name is not None else None
            if not isinstance(reference, str):
                group_key = ("", spec.endpoint)
                if group_key not in groups:
                    title = f"from text: {spec_for(spec.endpoint).name}"
                    groups[group_key] = _Source(f"text:{spec.endpoint}", title, None)
            else:
                group_key = (spec.clip or "", reference)
                if group_key not in groups:
                    groups[group_key] = self._source(reader, reference)
            groups[group_key].jobs.append(spec)
        return list(groups.values())

    def _source(self, spec: JobSpec, reference: str) -> _Source:
        ident = spec.clip or ""
        if reference.startswith(LOCAL_PREFIX):
            local = spec.files.get(reference.removeprefix(LOCAL_PREFIX))
            if local is not None:
                kind = _kind_of(local.path.name, local.content_type)
                return _Source(ident, ident, kind, local=local)
            return _Source(ident, ident, None)
        kind = _kind_of(urllib.parse.urlsplit(reference).path)
        return _Source(ident, ident, kind, url=reference)

    # -- posters -----------------------------------------------------------------------

    def _videos(self) -> dict[str, Path]:
        """Every local video the page shows, by sha256."""
        found: dict[str, Path] = {}
        for source in self.sources:
            if source.local is not None and source.kind == "video":
                found[source.local.sha256] = source.local.path
            for spec in source.jobs:
                row = self.rows.get(spec.key)
                if row is None or row.state != "done":
                    continue
                for output in row.outputs:
                    path = str(output.get("path", ""))
                    if _kind(path) == "video":
                        found[str(output.get("sha256", ""))] = self.root / path
        return found

    def make_posters(self, limit: int | None = None) -> None:
        """Extract the posters not made yet (named by content, so never stale), in parallel;
        at most ``limit`` of them."""
        poster_dir = self.root / POSTER_DIR
        existing = set(os.listdir(poster_dir)) if poster_dir.is_dir() else set()
        todo: dict[str, Path] = {}
        for sha, video in self._videos().items():
            if not sha:
                continue
            if _poster_name(sha) in existing:
                self.posters[sha] = str(POSTER_DIR / _poster_name(sha))
            elif video.is_file() and (limit is None or len(todo) < limit):
                todo[sha] = video

        def make(sha: str) -> tuple[str, bool]:
            return sha, extract_poster(todo[sha], poster_dir / _poster_name(sha))

        if not todo:
            return
        # PyAV decodes without holding the GIL, so threads do run in parallel.
        with ThreadPoolExecutor(max_workers=min(len(todo), os.cpu_count() or 2)) as pool:
            for sha, ok in pool.map(make, todo):
                if ok:
                    self.posters[sha] = str(POSTER_DIR / _poster_name(sha))

    # -- rendering ---------------------------------------------------------------------

    def render(self) -> str:
        """The whole page."""
        states: Counter[str] = Counter()
        prompts: Counter[str] = Counter()
        endpoints: Counter[str] = Counter()
        body: list[str] = []
        for source in self.sources:
            self._render_group(source, body, states, prompts, endpoints)
        head = self._render_header(states, prompts, endpoints)
        return "".join(
            [
                '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                # An empty icon: without it the browser asks the server for /favicon.ico.
                '<link rel="icon" href="data:,">',
                f"<title>{_e(self.plan.facts.name)} · raybatch review</title>",
                f"<style>{_CSS}{PARTS_CSS}</style></head><body>",
                *head,
                '<main id="groups">',
                *body,
                '</main><p id="empty" hidden>No job matches these filters.</p>',
                f"<script>{_JS}{PARTS_JS}</script></body></html>\n",
            ]
        )

    def _render_header(
        self, states: Counter[str], prompts: Counter[str], endpoints: Counter[str]
    ) -> list[str]:
        plan = self.plan
        total = len(plan.jobs)
        cards = total - len(self.parts.inside)
        for key in self.parts.inside:  # parts have no card, but count in the totals
            row = self.rows.get(key)
            states[row.state.value if row is not None else "new"] += 1
        estimate = sum(s.estimated_cost or 0.0 for s in plan.jobs)
        spent = self.spend.usd if self.spend else 0.0
        units = self.spend.billable_units if self.spend else 0.0
        ordered = sorted(states.items(), key=lambda item: _STATE_ORDER.get(item[0], 99))
        counts = " ".join(
            f'<span class="badge s-{_state_class(s)}">{_e(s)} {n}</span>' for s, n in ordered
        )
        stamp = time.strftime("%Y-%m-%d %H:%M")
        prompt_texts = plan.facts.prompts
        return [
            "<header><h1>",
            _e(plan.facts.name),
            " <small>review</small></h1>",
            f'<p class="summary">{total} job(s) · {counts}</p>',
            f'<p class="summary">estimated ${estimate:.2f} in all · spent (estimated) '
            f"${spent:.2f} · billable units reported by fal {units:g} · written {stamp} from "
            f"<code>{_e(str(plan.manifest_path))}</code></p>",
            '<form id="filters" onsubmit="return false">',
            _select(
                "prompt",
                "prompt",
                ((p, f"{p} ({n})", prompt_texts.get(p)) for p, n in prompts.items()),
            ),
            _select(
                "endpoint",
                "endpoint",
                ((e, f"{spec_for(e).name} ({n})", e) for e, n in endpoints.items()),
            ),
            _select(
                "status",
                "status",
                ((s, f"{s} ({n})", None) for s, n in ordered),
            ),
            '<label>search <input id="f-text" type="search" placeholder="clip, prompt…"></label>',
            f'<span class="shown"><b id="shown">{cards}</b> of {cards} shown</span>',
            "</form></header>",
        ]

    def _render_group(
        self,
        source: _Source,
        out: list[str],
        states: Counter[str],
        prompts: Counter[str],
        endpoints: Counter[str],
    ) -> None:
        out.append(f'<section class="group" data-source="{_e(source.id)}"><h2>')
        out.append(_e(source.title))
        if source.local is not None:
            shown = os.path.relpath(source.local.path.absolute(), self.manifest_dir)
            out.append(
                f" <small>{_e(Path(shown).as_posix())} · {human_size(source.local.size)}</small>"
            )
        out.append('</h2><div class="row">')
        out.extend(self._render_source(source))
        for spec in source.jobs:
            row = self.rows.get(spec.key)
            state = row.state if row is not None else "new"
            prompt = spec.prompt or NO_PROMPT
            states[state] += 1
            prompts[prompt] += 1
            endpoints[spec.endpoint] += 1
            self._render_card(spec, row, state, prompt, source, out)
        out.append("</div></section>")

    def _render_source(self, source: _Source) -> list[str]:
        if source.kind is None and source.local is None and source.url is None:
            return []
        parts = ['<figure class="source">']
        if source.local is not None:
            rel = os.path.relpath(source.local.path.absolute(), self.root)
            poster = self.posters.get(source.local.sha256)
            parts.append(self._media(_Media(_href(Path(rel).as_posix()), source.kind, poster)))
            caption = _e(source.local.path.name)
        elif source.url is not None:
            parts.append(_remote(source.url))
            caption = "remote source"
        else:
            caption = "source"
        parts.append(f"<figcaption>source · {caption}</figcaption></figure>")
        return parts

    def _render_card(
        self,
        spec: JobSpec,
        row: JobRow | None,
        state: str,
        prompt: str,
        source: _Source,
        out: list[str],
    ) -> None:
        text = spec.arguments.get("prompt")
        text = text if isinstance(text, str) else ""
        endpoint = spec_for(spec.endpoint)
        search = " ".join([source.id, prompt, text, endpoint.name]).lower()
        out.append(
            f'<article class="job s-{_state_class(state)}" data-key="{spec.key[:16]}"'
            f' data-prompt="{_e(prompt)}" data-endpoint="{_e(spec.endpoint)}"'
            f' data-status="{_e(state)}" data-search="{_e(search)}">'
        )
        out.append(self._render_result(row, state))
        out.append(self.parts.panel(spec, self.rows))
        out.append('<div class="meta"><p class="title">')
        out.append(f'<span class="badge s-{_state_class(state)}">{_e(state)}</span> ')
        out.append(f"<b>{_e(prompt)}</b> ")
        out.append(f'<span class="endpoint" title="{_e(spec.endpoint)}">{_e(endpoint.name)}</span>')
        out.append("</p>")
        if text:
            out.append(f'<p class="prompt">{_e(text)}</p>')
        out.append(_params(spec, _source_field(spec), self.parts.hidden(spec)))
        out.append(f'<p class="cost">{_cost(spec, row)}</p>')
        if row is not None and state == "done" and row.outputs:
            out.append(_files(row.outputs))
        if row is not None and row.error and state != "done":
            label = "failed" if state in ("failed", "cancelled") else "last error"
            reason = f"{row.error_class}: {row.error}" if row.error_class else row.error
            out.append(f'<p class="error"><b>{label}:</b> {_e(reason)}</p>')
        out.append("</div></article>")

    def _render_result(self, row: JobRow | None, state: str) -> str:
        """The first output of a done job as a medium; a placeholder saying why there is none."""
        if row is None or state != "done" or not row.outputs:
            return f'<div class="media placeholder">{_e(_WAITING.get(state, state))}</div>'
        first = row.outputs[0]
        path = str(first.get("path", ""))
        if not (self.root / path).is_file():
            # Never point the browser at a missing file: it would log an error for each.
            return f'<div class="media placeholder missing">file missing: {_e(path)}</div>'
        poster = self.posters.get(str(first.get("sha256", "")))
        return f'<div class="media">{self._media(_Media(_href(path), _kind(path), poster))}</div>'

    def _media(self, media: _Media) -> str:
        """A <video>, <img> or link; only the first screen's videos load with the page."""
        src = _e(media.href)
        if media.kind == "image":
            return f'<img loading="lazy" decoding="async" src="{src}" alt="">'
        if media.kind != "video":
            return f'<a class="file" href="{src}">{_e(PurePosixPath(media.href).name)}</a>'
        self.media_shown += 1
        poster = _e(media.poster) if media.poster else ""
        if self.media_shown <= EAGER_MEDIA:
            attrs = 'preload="metadata"' + (f' poster="{poster}"' if poster else "")
        else:
            # The script sets the poster and preload="metadata" when the card nears the screen.
            attrs = 'preload="none" data-lazy' + (f' data-poster="{poster}"' if poster else "")
        return f'<video controls {attrs} src="{src}"></video>'


_STATE_ORDER = {
    s: i
    for i, s in enumerate(
        ("done", "failed", "cancelled", "running", "queued", "submitting", "completed")
        + ("pending", "new")
    )
}


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _state_class(state: str) -> str:
    return state if state in KNOWN_STATES else "other"


def _select(name: str, label: str, options: Iterable[tuple[str, str, str | None]]) -> str:
    parts = [f'<label>{_e(label)} <select id="f-{name}"><option value="">all</option>']
    for value, text, title in options:
        tip = f' title="{_e(title)}"' if title else ""
        parts.append(f'<option value="{_e(value)}"{tip}>{_e(text)}</option>')
    parts.append("</select></label>")
    return "".join(parts)


def _remote(url: str) -> str:
    """A link to a remote source (never embedded: the page must work offline)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        return '<p class="missing">inline data source</p>'
    return f'<a class="file" href="{_e(url)}" rel="noreferrer noopener">{_e(url)}</a>'


def _params(spec: JobSpec, source_field: str | None, hidden: frozenset[str] = frozenset()) -> str:
    """The job's input apart from its prompt, its source and ``hidden`` fields, local
    files by name."""
    names = {sha: local.path.name for sha, local in spec.files.items()}

    def readable(text: str) -> str:
        if text.startswith(LOCAL_PREFIX):
            return names.get(text.removeprefix(LOCAL_PREFIX), "local file")
        return text

    items = []
    for key, value in spec.arguments.items():
        if key in ("prompt", source_field) or key in hidden or value is False:
            continue  # an option left off says nothing worth the room
        shown = substitute(value, readable)
        text = shown if isinstance(shown, str) else canonical_json(shown)
        items.append(f"<dt>{_e(key)}</dt><dd>{_e(text)}</dd>")
    return f'<dl class="params">{"".join(items)}</dl>' if items else ""


def _files(outputs: list[dict[str, Any]]) -> str:
    """Links to every output file of a job (an EXR archive beside the video, say)."""
    links = []
    for output in outputs:
        path = str(output.get("path", ""))
        size = output.get("size")
        shown = PurePosixPath(path).name + (f" ({human_size(size)})" if size else "")
        links.append(f'<a href="{_e(_href(path))}">{_e(shown)}</a>')
    return f'<p class="files">{" · ".join(links)}</p>'


def _cost(spec: JobSpec, row: JobRow | None) -> str:
    parts = ["no price" if spec.estimated_cost is None else f"est. ${spec.estimated_cost:.2f}"]
    if row is not None:
        if row.billable_units is not None:
            parts.append(f"{row.billable_units:g} billable units")
        if row.attempts > 1:
            parts.append(f"{row.attempts} attempts")
        if row.request_id:
            parts.append(f'<span class="rid" title="fal request id">{_e(row.request_id)}</span>')
    return " · ".join(parts)


_CSS = """
:root{--bg:#15171c;--card:#1f2229;--fg:#e6e6e6;--dim:#9aa0aa;--line:#30343d;
--ok:#3fb950;--bad:#f85149;--busy:#d29922;--wait:#6e7681}
*{box-sizing:border-box}
body{margin:0;font:14px/1.4 system-ui,sans-serif;background:var(--bg);color:var(--fg)}
header{position:sticky;top:0;z-index:2;background:var(--bg);padding:.6rem 1rem;
border-bottom:1px solid var(--line)}
h1{margin:0 0 .2rem;font-size:1.3rem}h1 small,h2 small{color:var(--dim);font-weight:normal}
.summary{margin:.15rem 0;color:var(--dim)}code{color:var(--fg)}
form{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center;margin-top:.4rem}
select,input{background:var(--card);color:var(--fg);border:1px solid var(--line);
border-radius:4px;padding:.2rem .3rem;max-width:18rem}
.shown{color:var(--dim)}
main{padding:0 1rem 2rem}
.group{border-bottom:1px solid var(--line);padding:.6rem 0}
h2{font-size:1.05rem;margin:.2rem 0 .5rem}
.row{display:grid;grid-template-columns:repeat(auto-fill,minmax(270px,1fr));gap:.7rem}
.source,.job{background:var(--card);border:1px solid var(--line);border-radius:6px;
margin:0;overflow:hidden;display:flex;flex-direction:column}
.source{border-color:#58a6ff}
figcaption{padding:.3rem .5rem;color:var(--dim)}
video,img{display:block;width:100%;aspect-ratio:16/9;object-fit:contain;background:#000}
.placeholder{aspect-ratio:16/9;display:flex;align-items:center;justify-content:center;
color:var(--dim);background:#0d0f12}
.meta{padding:.4rem .55rem}.meta p{margin:.2rem 0}
.prompt{color:var(--dim);display:-webkit-box;-webkit-line-clamp:3;-webkit-box-orient:vertical;
overflow:hidden}
.prompt:hover{-webkit-line-clamp:unset}
.params{display:grid;grid-template-columns:auto 1fr;gap:0 .5rem;margin:.2rem 0;font-size:12px}
.params dt{color:var(--dim)}.params dd{margin:0;overflow-wrap:anywhere}
.cost,.files{font-size:12px;color:var(--dim)}.rid{font-family:monospace}
.error{color:var(--bad);overflow-wrap:anywhere}.missing{color:var(--bad);padding:.5rem}
.files a{overflow-wrap:anywhere}
a{color:#58a6ff}.file{display:block;padding:1rem;overflow-wrap:anywhere}
.endpoint{color:var(--dim);font-size:12px}
.badge{display:inline-block;border-radius:3px;padding:0 .35rem;font-size:12px;
background:var(--wait);color:#fff}
.s-done .badge,.badge.s-done{background:var(--ok)}
.s-failed .badge,.badge.s-failed,.s-cancelled .badge,.badge.s-cancelled{background:var(--bad)}
.s-running .badge,.badge.s-running,.s-queued .badge,.badge.s-queued,.s-submitting .badge,
.badge.s-submitting,.s-completed .badge,.badge.s-completed{background:var(--busy)}
.job.s-failed,.job.s-cancelled{border-color:var(--bad)}
.job{content-visibility:auto;contain-intrinsic-size:auto 400px}
[hidden]{display:none!important}
#empty{padding:2rem;color:var(--dim)}
"""

_JS = """
(() => {
  const cards = Array.from(document.querySelectorAll('article.job'));
  const groups = Array.from(document.querySelectorAll('section.group'));
  const filters = {
    prompt: document.getElementById('f-prompt'),
    endpoint: document.getElementById('f-endpoint'),
    status: document.getElementById('f-status'),
    text: document.getElementById('f-text'),
  };
  const shown = document.getElementById('shown');
  const empty = document.getElementById('empty');
  function apply() {
    const p = filters.prompt.value, e = filters.endpoint.value, s = filters.status.value;
    const q = filters.text.value.trim().toLowerCase();
    let n = 0;
    for (const card of cards) {
      const d = card.dataset;
      const ok = (!p || d.prompt === p) && (!e || d.endpoint === e) &&
        (!s || d.status === s) && (!q || d.search.includes(q));
      card.hidden = !ok;
      if (ok) n++;
    }
    for (const group of groups) {
      group.hidden = !group.querySelector('article.job:not([hidden])');
    }
    shown.textContent = String(n);
    empty.hidden = n > 0;
    const state = new URLSearchParams();
    for (const [name, el] of Object.entries(filters)) if (el.value) state.set(name, el.value);
    try {
      // Keeps the filters in the address, so a view can be bookmarked or shared.
      history.replaceState(null, '', state.toString() ? '#' + state : location.pathname);
    } catch (err) { /* some browsers refuse this on file:// pages; filters still work */ }
  }
  const saved = new URLSearchParams(location.hash.slice(1));
  for (const [name, el] of Object.entries(filters)) {
    const value = saved.get(name);
    if (value !== null && (el.tagName !== 'SELECT' ||
        Array.from(el.options).some((o) => o.value === value))) el.value = value;
    el.addEventListener('input', apply);
    el.addEventListener('change', apply);
  }
  if (saved.toString()) apply();
  const lazy = document.querySelectorAll('video[data-lazy]');
  const wake = (video) => {
    if (video.dataset.poster) video.poster = video.dataset.poster;
    video.removeAttribute('data-lazy');
    video.preload = 'metadata';
    video.load();
  };
  if ('IntersectionObserver' in window) {
    const io = new IntersectionObserver((entries) => {
      for (const entry of entries) {
        if (entry.isIntersecting) { io.unobserve(entry.target); wake(entry.target); }
      }
    }, {rootMargin: '800px 0px'});
    lazy.forEach((video) => io.observe(video));
  } else {
    lazy.forEach(wake);
  }
})();
"""
