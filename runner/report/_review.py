"""The review page: every source beside its results, looks and verdicts.

Two forms from one renderer. ``<output_dir>/index.html`` is one self-contained file
(inline CSS and JS, nothing fetched from the network) that works from ``file://`` as
well as from any static server, media referenced by relative path, verdicts and notes
shown read-only. ``raybatch review`` serves the same page (see ``_server``) with a
session token and controls to approve, reject, note and roll again, driven by keyboard
(j/k move, a approve, r reject, u clear, n note) or by click.

Video posters are extracted once per distinct file (named by its sha256) into
``.review/posters/``. The file is written as it is rendered, card by card (the page of a
100k-job library is ~110 MB of HTML: held whole as strings, then as one string, then as
bytes, it took ~600 MB), and media beyond the first screen load only when scrolled to,
so libraries of thousands of jobs stay quick to write and to open.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..job import LOCAL_PREFIX, PARENT_PREFIX, SOURCE_FIELDS, JobSpec, LocalFile, endpoint_name
from ..plan import Plan
from ..state import JobState, Judgement, ShownRow, Spend, StateStore
from ._judging import Judgeable, count_phrases, rerollable, verdict_counts
from ._parts import CSS as PARTS_CSS, JS as PARTS_JS, LongClipParts
from ._previews import make_posters, source_proxies
from ._review_assets import CSS, JS
from ._review_cards import (
    NO_PROMPT,
    WAITING,
    Links,
    Media,
    cost,
    e,
    files,
    kind_of,
    kind_of_output,
    params,
    remote,
    select,
    state_class,
    verdict_block,
)
from ._summary import human_size

#: Media elements that load with the page; the rest load when scrolled near.
EAGER_MEDIA = 24


@dataclass(frozen=True)
class Live:
    """What a served page has that a file does not: the session's token (sent back with
    every change) and the nonce its script and style run under (the server's CSP)."""

    token: str
    nonce: str


def write_review_page(
    plan: Plan,
    *,
    posters: int | None = None,
    proxies: int | None = None,
    target: Path | None = None,
) -> Path:
    """Write ``<output_dir>/index.html`` (or ``target``) for ``plan`` and return its path.

    Reads the state file read-only (safe while a run goes on); jobs it does not know yet
    are shown as ``new``. Posters missing for a video are extracted first, at most
    ``posters`` of them (None: all); a video without one shows its own first frame.
    Sources browsers cannot play get an H.264 proxy, at most ``proxies`` new ones (None:
    all), among at most ``posters`` sources looked at for the first time; one not made
    yet is shown as it is, with a note.
    """
    output_dir = plan.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore.open_readonly(output_dir / "state.db")
    try:
        page = _page(plan, store, Links(output_dir), None, posters, proxies)
    finally:
        if store is not None:
            store.close()
    target = target or output_dir / "index.html"
    tmp = target.with_name(target.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as out:
            out.writelines(page.chunks())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def review_html(
    plan: Plan,
    store: StateStore | None,
    links: Links,
    *,
    live: Live | None = None,
    posters: int | None = None,
    proxies: int | None = 0,
) -> str:
    """The page for ``plan`` as the state ``store`` (None: nothing ran) has it (making at
    most ``posters`` posters and ``proxies`` proxies first; see ``write_review_page``)."""
    return "".join(_page(plan, store, links, live, posters, proxies).chunks())


def _page(
    plan: Plan,
    store: StateStore | None,
    links: Links,
    live: Live | None,
    posters: int | None,
    proxies: int | None,
) -> _Page:
    keys = set(plan.keys)
    rows: dict[str, ShownRow] = {}
    spend = None
    rolled: dict[str, int] = {}
    if store is not None:
        rows = store.shown_rows(keys)
        spend = store.spend()
        rolled = {r["from_key"]: int(r["take"]) for r in store.rerolls()}
    page = _Page(plan, rows, spend, links, live, rolled)
    page.proxies = {
        sha: None if path is None else links.output(path)
        for sha, path in source_proxies(
            plan.output_dir, page.source_videos(), limit=proxies, probes=posters
        ).items()
    }
    page.posters = {
        sha: links.output(path)
        for sha, path in make_posters(plan.output_dir, page.videos(), posters).items()
    }
    return page


@dataclass
class _Source:
    """What a group of jobs was made from: a local file, a URL, or nothing (text only)."""

    id: str
    title: str
    kind: str | None  # "video", "image", or None when unknown or absent
    local: LocalFile | None = None
    url: str | None = None
    jobs: list[JobSpec] = field(default_factory=list)


def _source_field(spec: JobSpec) -> str | None:
    if spec.endpoint in SOURCE_FIELDS:
        return SOURCE_FIELDS[spec.endpoint]
    # A pass-through endpoint (or a local step) takes its source in fal's usual field.
    return next((f for f in ("video_url", "image_url") if f in spec.arguments), None)


class _Page:
    """Everything the page shows, gathered once, then rendered to one string."""

    def __init__(
        self,
        plan: Plan,
        rows: Mapping[str, ShownRow],
        spend: Spend | None,
        links: Links,
        live: Live | None,
        rolled: Mapping[str, int],
    ) -> None:
        self.plan = plan
        self.rows = rows
        self.spend = spend
        self.links = links
        self.live = live
        self.rolled = rolled
        self.root = plan.output_dir
        self.manifest_dir = plan.manifest_path.parent.absolute()
        self.judgeable = Judgeable.of(plan)
        self.gated = {gate for gates in plan.columns.gates for gate in gates}
        self.parts = LongClipParts(plan.jobs)
        self.sources = self._group(plan.jobs)
        self.posters: dict[str, str] = {}  # sha256 -> poster URL
        self.proxies: dict[str, str | None] = {}  # sha256 -> proxy URL (None: not made yet)
        self.media_shown = 0

    def _group(self, jobs: Iterable[JobSpec]) -> list[_Source]:
        groups: dict[tuple[str, str], _Source] = {}
        by_clip: dict[str, tuple[str, str]] = {}
        # Made from another job's output (a look from a frame): shown first beside its
        # clip, once the clip's group is known (a long clip's is known at its stitch).
        derived: list[JobSpec] = []
        for spec in jobs:
            if spec.key in self.parts.inside:
                continue  # a long clip's part: shown in its stitched output's card
            reader = self.parts.source(spec) or spec  # a stitch goes with the clip it cut
            name = _source_field(reader) if spec.clip is not None else None
            reference = reader.arguments.get(name) if name is not None else None
            if isinstance(reference, str) and reference.startswith(PARENT_PREFIX):
                derived.append(spec)
                continue
            group_key = ("", spec.endpoint)
            if isinstance(reference, str):
                group_key = (spec.clip or "", reference)
            if group_key not in groups:
                groups[group_key] = self._new_group(reader, reference)
            if spec.clip is not None:
                by_clip.setdefault(spec.clip, group_key)
            groups[group_key].jobs.append(spec)
        firsts: dict[tuple[str, str], list[JobSpec]] = {}
        for spec in derived:
            group_key = by_clip.get(spec.clip or "", ("", spec.endpoint))
            if group_key not in groups:
                groups[group_key] = self._new_group(spec, None)
            firsts.setdefault(group_key, []).append(spec)
        for group_key, specs in firsts.items():
            groups[group_key].jobs[:0] = specs
        return list(groups.values())

    def _new_group(self, spec: JobSpec, reference: object) -> _Source:
        """The group of jobs made from ``reference`` (a source), or from text."""
        if isinstance(reference, str):
            return self._source(spec, reference)
        return _Source(f"text:{spec.endpoint}", f"from text: {endpoint_name(spec.endpoint)}", None)

    def _source(self, spec: JobSpec, reference: str) -> _Source:
        ident = spec.clip or ""
        if reference.startswith(LOCAL_PREFIX):
            local = spec.files.get(reference.removeprefix(LOCAL_PREFIX))
            if local is not None:
                kind = kind_of(local.path.name, local.content_type)
                return _Source(ident, ident, kind, local=local)
            return _Source(ident, ident, None)
        kind = kind_of(urllib.parse.urlsplit(reference).path)
        return _Source(ident, ident, kind, url=reference)

    def source_videos(self) -> dict[str, Path]:
        """Every local source video the page shows, by sha256."""
        return {
            source.local.sha256: source.local.path
            for source in self.sources
            if source.local is not None and source.kind == "video" and source.local.path.is_file()
        }

    def videos(self) -> dict[str, Path]:
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
                    if kind_of_output(path) == "video":
                        found[str(output.get("sha256", ""))] = self.root / path
        return found

    # -- rendering ---------------------------------------------------------------------

    def chunks(self) -> Iterator[str]:
        """The whole page, a few lines at a time (the header's counts are taken first)."""
        states: Counter[str] = Counter()
        prompts: Counter[str] = Counter()
        endpoints: Counter[str] = Counter()
        for source in self.sources:
            for spec in source.jobs:
                row = self.rows.get(spec.key)
                states[row.state if row is not None else "new"] += 1
                prompts[spec.prompt or NO_PROMPT] += 1
                endpoints[spec.endpoint] += 1
        nonce = f' nonce="{e(self.live.nonce)}"' if self.live else ""
        token = f'<meta name="raybatch-token" content="{e(self.live.token)}">' if self.live else ""
        yield from (
            '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            token,
            # An empty icon: without it the browser asks the server for /favicon.ico.
            '<link rel="icon" href="data:,">',
            f"<title>{e(self.plan.facts.name)} · raybatch review</title>",
            f"<style{nonce}>{CSS}{PARTS_CSS}</style></head><body>",
        )
        yield from self._render_header(states, prompts, endpoints)
        yield '<main id="groups">'
        for source in self.sources:
            yield from self._render_group(source)
        yield '</main><p id="empty" hidden>No job matches these filters.</p>'
        yield f"<script{nonce}>{JS}{PARTS_JS}</script></body></html>\n"

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
            f'<span class="badge s-{state_class(s)}">{e(s)} {n}</span>' for s, n in ordered
        )
        stamp = time.strftime("%Y-%m-%d %H:%M")
        prompt_texts = plan.facts.prompts
        judged = {
            key: Judgement(row.verdict, row.note, row.judged_at)
            for key, row in self.rows.items()
            if row.verdict or row.note
        }
        verdicts = verdict_counts(plan, {k: r.state for k, r in self.rows.items()}, judged)
        judging = _verdict_words(verdicts)
        keys = (
            "j/k move · a approve · r reject · u clear · n note"
            if self.live
            else "j/k move · verdicts are given in <code>raybatch review</code>"
        )
        return [
            "<header><h1>",
            e(plan.facts.name),
            f" <small>{'review' if self.live else 'review (read-only)'}</small></h1>",
            f'<p class="summary">{total} job(s) · {counts}</p>',
            f'<p class="summary" id="verdicts">{judging}</p>' if judging else "",
            f'<p class="summary">estimated ${estimate:.2f} in all · spent (estimated) '
            f"${spent:.2f} · billable units reported by fal {units:g} · written {stamp} from "
            f"<code>{e(str(plan.manifest_path))}</code></p>",
            '<form id="filters">',
            select(
                "prompt",
                "prompt",
                ((p, f"{p} ({n})", prompt_texts.get(p)) for p, n in prompts.items()),
            ),
            select(
                "endpoint",
                "endpoint",
                ((x, f"{endpoint_name(x)} ({n})", x) for x, n in endpoints.items()),
            ),
            select("status", "status", ((s, f"{s} ({n})", None) for s, n in ordered)),
            select(
                "verdict",
                "verdict",
                (
                    ("todo", "not judged yet", "done looks and outputs without a verdict"),
                    ("approved", "approved", None),
                    ("rejected", "rejected", None),
                ),
            ),
            '<label>search <input id="f-text" type="search" placeholder="clip, prompt…"></label>',
            f'<span class="shown"><b id="shown">{cards}</b> of {cards} shown</span>',
            f'<span class="keys">{keys}</span>',
            '</form><p id="message" role="status" hidden></p></header>',
        ]

    def _render_group(self, source: _Source) -> Iterator[str]:
        """A source's section: its heading and source, then one string per card."""
        head = [f'<section class="group" data-source="{e(source.id)}"><h2>', e(source.title)]
        if source.local is not None:
            shown = os.path.relpath(source.local.path.absolute(), self.manifest_dir)
            head.append(
                f" <small>{e(Path(shown).as_posix())} · {human_size(source.local.size)}</small>"
            )
        head.append('</h2><div class="row">')
        head.extend(self._render_source(source))
        yield "".join(head)
        for spec in source.jobs:
            row = self.rows.get(spec.key)
            state = row.state if row is not None else "new"
            card: list[str] = []
            self._render_card(spec, row, state, spec.prompt or NO_PROMPT, source, card)
            yield "".join(card)
        yield "</div></section>"

    def _render_source(self, source: _Source) -> list[str]:
        if source.kind is None and source.local is None and source.url is None:
            return []
        parts = ['<figure class="source">']
        if source.local is not None:
            sha = source.local.sha256
            original = self.links.source(source.local)
            shown = self.proxies.get(sha) or original
            parts.append(self._media(Media(shown, source.kind, self.posters.get(sha))))
            caption = e(source.local.path.name)
            if self.proxies.get(sha):
                caption += f' · shown as an H.264 copy (<a href="{e(original)}">original</a>)'
            elif sha in self.proxies:
                caption += " · may not play in a browser: `raybatch report` makes a copy that does"
        elif source.url is not None:
            parts.append(remote(source.url))
            caption = "remote source"
        else:
            caption = "source"
        parts.append(f"<figcaption>source · {caption}</figcaption></figure>")
        return parts

    def _render_card(
        self,
        spec: JobSpec,
        row: ShownRow | None,
        state: str,
        prompt: str,
        source: _Source,
        out: list[str],
    ) -> None:
        text = spec.arguments.get("prompt")
        text = text if isinstance(text, str) else ""
        endpoint = endpoint_name(spec.endpoint)
        kind = self.judgeable.kind(spec.key)
        role = spec.role or ("step" if spec.kind == "local" else "")
        search = " ".join([source.id, prompt, text, endpoint, role]).lower()
        verdict = (row.verdict if row is not None else None) or ""
        judge = ""
        if kind is not None and state == JobState.DONE:
            judge = verdict or "todo"
        rolled = self.rolled.get(spec.key)
        attrs = [
            f'class="job s-{state_class(state)}{" look" if spec.role else ""}"',
            f'data-key="{e(spec.key)}"',
            f'data-prompt="{e(prompt)}"',
            f'data-endpoint="{e(spec.endpoint)}"',
            f'data-status="{e(state)}"',
            f'data-search="{e(search)}"',
        ]
        if kind is not None:
            attrs.append(f'data-kind="{kind}" data-verdict="{e(judge)}"')
            if rerollable(spec, self.gated) and not rolled:
                attrs.append('data-reroll="1"')
        out.append(f"<article {' '.join(attrs)}>")
        out.append(self._render_result(spec, row, state))
        out.append(self.parts.panel(spec, self.rows, self.links))
        out.append('<div class="meta"><p class="title">')
        out.append(f'<span class="badge s-{state_class(state)}">{e(state)}</span> ')
        out.append(f"<b>{e(prompt)}</b> ")
        if role:
            out.append(f'<span class="role">{e(role)}</span> ')
        out.append(f'<span class="endpoint" title="{e(spec.endpoint)}">{e(endpoint)}</span>')
        out.append("</p>")
        if text:
            out.append(f'<p class="prompt">{e(text)}</p>')
        out.append(params(spec, _source_field(spec), self.parts.hidden(spec)))
        out.append(f'<p class="cost">{cost(spec, row)}</p>')
        if row is not None and state == "done" and row.outputs:
            out.append(files(row.outputs, self.links))
        if row is not None and row.error and state != "done":
            label = "failed" if state in ("failed", "cancelled") else "last error"
            reason = f"{row.error_class}: {row.error}" if row.error_class else row.error
            out.append(f'<p class="error"><b>{label}:</b> {e(reason)}</p>')
        if kind is not None:
            out.append(verdict_block(row, judge, rolled, self.live is not None))
        out.append("</div></article>")

    def _render_result(self, spec: JobSpec, row: ShownRow | None, state: str) -> str:
        """The first output of a done job as a medium; a placeholder saying why there is none."""
        if row is None or state != "done" or not row.outputs:
            why = WAITING.get(state, state)
            if spec.gates and state in ("blocked", "new"):
                gates = [self.rows.get(gate) for gate in spec.gates]
                verdicts = {g.verdict if g is not None else None for g in gates}
                if "rejected" in verdicts:
                    why = "held: its look was rejected"
                elif verdicts != {"approved"}:
                    why = "waits for its look to be approved"
            return f'<div class="media placeholder">{e(why)}</div>'
        first = row.outputs[0]
        path = str(first.get("path", ""))
        if not (self.root / path).is_file():
            # Never point the browser at a missing file: it would log an error for each.
            return f'<div class="media placeholder missing">file missing: {e(path)}</div>'
        poster = self.posters.get(str(first.get("sha256", "")))
        media = Media(self.links.output(path), kind_of_output(path), poster)
        return f'<div class="media">{self._media(media)}</div>'

    def _media(self, media: Media) -> str:
        """A <video>, <img> or link; only the first screen's videos load with the page."""
        src = e(media.href)
        if media.kind == "image":
            return f'<img loading="lazy" decoding="async" src="{src}" alt="">'
        if media.kind != "video":
            return f'<a class="file" href="{src}">{e(PurePosixPath(media.href).name)}</a>'
        self.media_shown += 1
        poster = e(media.poster) if media.poster else ""
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
        + ("pending", "blocked", "new")
    )
}


def _verdict_words(counts: Mapping[str, Mapping[str, float]]) -> str:
    """The header's verdict line (empty when nothing is judgeable yet)."""
    parts = count_phrases(counts)
    waiting, held = counts["waiting_for_verdict"], counts["held_by_rejection"]
    if waiting["jobs"]:
        parts.append(
            f"{waiting['jobs']:g} wait for a verdict (est. ${waiting['estimated_cost']:.2f})"
        )
    if held["jobs"]:
        parts.append(f"{held['jobs']:g} held by a rejected look")
    return " · ".join(parts)
