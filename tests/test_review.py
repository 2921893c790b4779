"""The review page as a file: what ``report`` (and the end of ``run``) writes, checked
without a browser (tests/test_browser.py loads it in one)."""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.parse
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import av
import pytest

from runner.manifest import plan
from runner.plan import Plan
from runner.report import write_review_page
from runner.report._previews import POSTER_DIR
from runner.report._review import EAGER_MEDIA, _Page
from runner.state import OutputFile, StateStore

from . import states
from .conftest import run_cli

#: Text a prompt or an error message could carry to break out of the page.
HOSTILE = "<script>alert(1)</script> \"><img src=x onerror=alert(2)> & 'q'"


class Page(HTMLParser):
    """Every start tag of a page with its attributes, for counting and following links."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def find(self, tag: str, cls: str | None = None) -> list[dict[str, str]]:
        """Attributes of every ``tag`` (with class ``cls`` among its classes, if given)."""
        return [
            a
            for t, a in self.tags
            if t == tag and (cls is None or cls in a.get("class", "").split())
        ]

    def references(self) -> list[str]:
        """Every URL the page would load or link to."""
        return [
            a[name]
            for _, a in self.tags
            for name in ("src", "href", "poster", "data-poster")
            if a.get(name)
        ]


def synthetic_library(demo: Path, out: Path, prompts: int = 1000) -> Plan:
    """The demo's 3 clips × ``prompts`` prompts; a third done, a third failed, a third pending.

    Every done job's output is a hard link to the same real clip, so the page has real,
    playable files without rendering thousands of them.
    """
    lines = [
        "name: library",
        "endpoint: luma/agent/ray/v3.2/video-to-video",
        "output: '{clip}/{prompt}.mp4'",
        "concurrency: 4",
        "defaults: {resolution: 540p, duration: 5s}",
    ]
    lines.append("clips: [media/city.mp4, media/beach.mp4, media/forest.mp4]\nprompts:")
    lines += [f"  p{i:04d}: 'look number {i}'" for i in range(prompts)]
    manifest = demo.with_name("library.yaml")
    manifest.write_text("\n".join(lines) + "\n")
    library = plan(manifest, output_dir=out)
    media = demo.parent / "media" / "city.mp4"
    sha = hashlib.sha256(media.read_bytes()).hexdigest()
    store = StateStore.open(out / "state.db")
    try:
        states.add(store, library.jobs)
        ops = []
        for index, spec in enumerate(library.jobs):
            if index % 3 == 0:
                target = out / str(spec.output)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(media, target)
                output = OutputFile(str(spec.output), sha, media.stat().st_size, "u", "video")
                ops += states.done(spec.key, [output])
            elif index % 3 == 1:
                ops += states.failed(spec.key, "ContentModerated", f"refused: {HOSTILE}")
        states.apply(store, ops)
    finally:
        store.close()
    return library


def _local_target(out: Path, reference: str) -> Path:
    return (out / urllib.parse.unquote(reference)).resolve()


def test_report_after_a_demo_run(demo: Path, tmp_path: Path) -> None:
    """After a run the page holds every source beside its results, all local and resolvable."""
    out = tmp_path / "out"
    done = run_cli("run", demo, "--local", "--output-dir", out)
    assert done.returncode == 0, done.stderr
    page_path = out / "index.html"
    written_by_run = page_path.read_text()
    posters = sorted((out / POSTER_DIR).glob("*.jpg"))
    stamps = [p.stat().st_mtime_ns for p in posters]
    report = run_cli("report", demo, "--output-dir", out)
    page = Page(page_path.read_text())
    videos = page.find("video")

    assert report.returncode == 0 and report.stdout.strip() == f"wrote {page_path}"
    assert Page(written_by_run).find("article", "job") == page.find("article", "job")
    assert len(page.find("section", "group")) == 3
    assert len(page.find("figure", "source")) == 3
    cards = page.find("article", "job")
    assert len(cards) == 9 and {c["data-status"] for c in cards} == {"done"}
    assert Counter(c["data-prompt"] for c in cards) == {"noir": 3, "sepia": 3, "neon": 3}
    # Sources by relative path beside the manifest; results inside the output directory.
    sources = {_local_target(out, v["src"]) for v in videos} - set(out.rglob("*.mp4"))
    assert sources == {
        (tmp_path / "media" / f"{n}.mp4").resolve() for n in ("city", "beach", "forest")
    }
    assert len(videos) == 12 and all(v["preload"] == "metadata" for v in videos)
    for reference in page.references():
        assert not reference.startswith(("http:", "https:", "//")), reference
        if not reference.startswith("data:"):
            assert _local_target(out, reference).is_file(), reference
    # One poster per distinct video, a real JPEG no wider than a thumbnail, made only once.
    assert {_local_target(out, v["poster"]) for v in videos} == {p.resolve() for p in posters}
    assert len(posters) == 12
    for poster in posters:
        assert poster.read_bytes()[:2] == b"\xff\xd8"
        with av.open(str(poster), "r") as image:
            frame = next(image.decode(video=0))
            assert 0 < frame.width <= 480 and frame.height > 0
    assert [p.stat().st_mtime_ns for p in posters] == stamps
    # Self-contained: no external script or style sheet.
    assert not [a for t, a in page.tags if t in ("script", "link") and a.get("src")]
    assert not page.find("link", "stylesheet")


def test_report_before_any_run(demo: Path, tmp_path: Path) -> None:
    """Before a run the page lists every planned job as new, and no state file appears."""
    out = tmp_path / "out"
    done = run_cli("report", demo, "--output-dir", out)
    page = Page((out / "index.html").read_text())
    cards = page.find("article", "job")

    assert done.returncode == 0, done.stderr
    assert len(cards) == 9 and {c["data-status"] for c in cards} == {"new"}
    assert len(page.find("video")) == 3  # the sources only
    assert not (out / "state.db").exists()


def test_untrusted_text_is_escaped(demo: Path, tmp_path: Path) -> None:
    """Markup in a prompt is shown as text: it adds no element or attribute to the page."""
    text = demo.read_text().replace(
        '"cyberpunk night, neon magenta and cyan glow"', json.dumps(HOSTILE)
    )
    demo.write_text(text)
    out = tmp_path / "out"
    assert run_cli("report", demo, "--output-dir", out).returncode == 0
    html_text = (out / "index.html").read_text()
    page = Page(html_text)

    assert HOSTILE not in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert len(page.find("script")) == 1  # the page's own
    assert not [a for _, a in page.tags if "onerror" in a]
    assert not page.find("img")


def test_a_page_that_fails_half_written_leaves_the_last_one(
    demo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page is written as it renders: a failure part-way keeps the previous page whole
    and leaves no temporary file."""
    out = tmp_path / "out"
    assert run_cli("report", demo, "--output-dir", out).returncode == 0
    before = (out / "index.html").read_bytes()
    cards = 0

    def failing_card(self: object, *args: object) -> None:
        nonlocal cards
        cards += 1
        if cards == 5:
            raise OSError("disk full")  # the page's first cards are already written

    monkeypatch.setattr(_Page, "_render_card", failing_card)  # a fault mid-page
    with pytest.raises(OSError, match="disk full"):
        write_review_page(plan(demo, output_dir=out))
    assert (out / "index.html").read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith("index")) == ["index.html"]


def test_thousands_of_jobs(demo: Path, tmp_path: Path) -> None:
    """3,000 jobs make one page with 3,000 cards; beyond the first screen media load lazily."""
    out = tmp_path / "out"
    library = synthetic_library(demo, out)
    started = time.perf_counter()
    page_path = write_review_page(library)
    print(f"3,000-job review page written in {time.perf_counter() - started:.2f}s")
    html_text = page_path.read_text()
    page = Page(html_text)
    cards = page.find("article", "job")
    videos = page.find("video")
    eager = [v for v in videos if v.get("preload") == "metadata"]
    lazy = [v for v in videos if v.get("preload") == "none"]

    assert len(cards) == 3000
    assert Counter(c["data-status"] for c in cards) == {
        "done": 1000,
        "failed": 1000,
        "pending": 1000,
    }
    # Each filter has "all" first: 1,000 prompts, 1 endpoint, 3 states, 3 verdicts.
    assert len(page.find("option")) == (1 + 1000) + (1 + 1) + (1 + 3) + (1 + 3)
    assert len(videos) == 3 + 1000
    assert len(eager) == EAGER_MEDIA and all(v.get("poster") for v in eager)
    assert len(lazy) == len(videos) - EAGER_MEDIA
    assert all("data-lazy" in v and v.get("data-poster") and not v.get("poster") for v in lazy)
    # Every result is the same file: one poster for them all, plus one per source clip.
    assert len({v.get("poster") or v.get("data-poster") for v in videos}) == 3
    assert len(list((out / POSTER_DIR).iterdir())) == 3
    assert html_text.count("refused: &lt;script&gt;") == 1000 and HOSTILE not in html_text
    assert 'value="failed">failed (1000)</option>' in html_text


def test_poster_budget_bounds_a_refresh_and_report_completes_it(demo: Path, tmp_path: Path) -> None:
    """A bounded refresh (the end of a run) extracts at most its budget of posters; a later
    unbounded one (``raybatch report``) makes the rest, and every card is there either way."""
    out = tmp_path / "out"
    library = synthetic_library(demo, out, prompts=3)
    bounded = Page(write_review_page(library, posters=1).read_text())
    assert len(list((out / POSTER_DIR).iterdir())) == 1
    assert len(bounded.find("article", "job")) == 9
    full = Page(write_review_page(library).read_text())
    assert len(list((out / POSTER_DIR).iterdir())) == 3
    assert all(v.get("poster") or v.get("data-poster") for v in full.find("video"))
