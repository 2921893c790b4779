"""The review page in a real browser: Debian's headless Chromium driven by Playwright.

A finished run's directory (manifest media and outputs side by side, so the page's relative
source paths resolve) is served on loopback; the page must play every video, show every
image, filter, and log no console error. The README's screenshot comes from here
(RAYBATCH_SCREENSHOT=1 refreshes it).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runner.report import write_review_page

from .conftest import MANIFESTS, ROOT, run_cli
from .test_review import synthetic_library

pytestmark = pytest.mark.browser

SCREENSHOT = ROOT / "docs" / "review-screenshot.png"
#: The README's screenshot shows the richest example there is.
SCREENSHOT_OF = "mixed.yaml" if (MANIFESTS / "mixed.yaml").exists() else "demo.yaml"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: A prompt the emulator's moderation refuses: gives the page failed cards to filter.
REFUSED = '  refused: "FORBIDDEN_CONTENT <b>not bold</b>"\n'


class _QuietHandler(SimpleHTTPRequestHandler):
    """A static file handler that keeps the test output clean."""

    def log_message(self, format: str, *args: Any) -> None:
        """Say nothing per request."""


class _PageServer(ThreadingHTTPServer):
    """A loopback file server for a page of thousands of media elements."""

    daemon_threads = True
    # Chromium opens connections in bursts as cards near the screen; the default backlog
    # of 5 drops some of them for a one-second SYN retry.
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A browser dropping a load it no longer needs is normal; anything else is not."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on a free loopback port; yields the base URL.

    Close the page before leaving: connections still queued when the server stops are
    reset, and the page would log them as its own errors.
    """
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = _PageServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, through Playwright (never a downloaded browser)."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _finished_run(tmp_path: Path, manifest_name: str) -> tuple[Path, int]:
    """Copy an example manifest beside its media, add a refused prompt, run it; (dir, failed)."""
    shutil.copytree(MANIFESTS / "media", tmp_path / "media", ignore=shutil.ignore_patterns("*.py"))
    text = (MANIFESTS / manifest_name).read_text()
    assert "\nprompts:\n" in text, "the example needs a prompts: mapping to add a refused one"
    manifest = tmp_path / manifest_name
    manifest.write_text(text.replace("\nprompts:\n", "\nprompts:\n" + REFUSED, 1))
    done = run_cli("run", manifest, "--local", "--output-dir", tmp_path / "out", timeout=240)
    assert done.returncode == 1, done.stderr  # the refused prompt's jobs fail, the rest run
    status = run_cli("status", manifest, "--output-dir", tmp_path / "out", "--json")
    failed = json.loads(status.stdout)["total"].get("failed", 0)
    assert failed > 0
    return manifest, failed


def _examples() -> list[Any]:
    mixed = MANIFESTS / "mixed.yaml"
    return [
        pytest.param("demo.yaml", id="demo"),
        pytest.param(
            "mixed.yaml",
            id="mixed",
            marks=pytest.mark.skipif(not mixed.exists(), reason="manifests/mixed.yaml not there"),
        ),
    ]


_MEDIA_STATE = """() => {
  const videos = Array.from(document.querySelectorAll('video'));
  const images = Array.from(document.querySelectorAll('img'));
  return {
    videos: videos.map((v) => ({src: v.currentSrc || v.src, ready: v.readyState,
      duration: v.duration, width: v.videoWidth, error: v.error && v.error.code})),
    images: images.map((i) => ({src: i.currentSrc || i.src, complete: i.complete,
      width: i.naturalWidth, height: i.naturalHeight})),
  };
}"""

_MEDIA_SETTLED = """() => {
  const videos = Array.from(document.querySelectorAll('video'));
  const images = Array.from(document.querySelectorAll('img'));
  return videos.every((v) => v.readyState >= 1 || v.error) && images.every((i) => i.complete);
}"""


_PLAY_ONE = """async () => {
  const video = document.querySelector('article.job video');
  video.muted = true;
  await video.play();
  await new Promise((resolve) => {
    const check = () => video.currentTime > 0.3 ? resolve() : setTimeout(check, 50);
    check();
  });
  video.pause();
  return video.getVideoPlaybackQuality().totalVideoFrames;
}"""


def _open(browser: Any) -> tuple[Any, Any, list[str]]:
    """A new page in its own context, and the list its console errors are collected in."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    return context, page, problems


def _visible_cards(page: Any) -> list[dict[str, str]]:
    result: list[dict[str, str]] = page.evaluate(
        """() => Array.from(document.querySelectorAll('article.job'))
             .filter((c) => c.offsetParent !== null)
             .map((c) => ({prompt: c.dataset.prompt, status: c.dataset.status}))"""
    )
    return result


@pytest.mark.parametrize("manifest_name", _examples())
def test_review_page_plays_every_medium_and_filters(
    browser: Any, tmp_path: Path, manifest_name: str
) -> None:
    """A finished run's review page plays every video, shows every image, filters, no errors."""
    manifest, failed = _finished_run(tmp_path, manifest_name)
    assert (tmp_path / "out" / "index.html").is_file()
    context, page, problems = _open(browser)
    outside: list[str] = []
    with serve(tmp_path) as base:
        page.on(
            "request",
            lambda r: None if r.url.startswith((base, "data:")) else outside.append(r.url),
        )
        page.goto(f"{base}/out/index.html", wait_until="load")
        # Media below the first screen load as they come near it: visit each one.
        for element in page.query_selector_all("video, img"):
            element.scroll_into_view_if_needed()
        page.evaluate("window.scrollTo(0, 0)")
        page.wait_for_function(_MEDIA_SETTLED, timeout=30_000)
        media = page.evaluate(_MEDIA_STATE)
        # Metadata alone does not prove the codec: play a result and count decoded frames.
        decoded = page.evaluate(_PLAY_ONE)

        total = page.eval_on_selector_all("article.job", "cards => cards.length")
        prompts = page.eval_on_selector_all(
            "#f-prompt option", "options => options.map((o) => o.value).filter(Boolean)"
        )
        if manifest_name == SCREENSHOT_OF:
            page.wait_for_timeout(300)  # posters are images too: let the last ones paint
            # A checkout stays clean: the README's copy is refreshed only when asked
            # (RAYBATCH_SCREENSHOT=1); otherwise the shot goes beside the test's files.
            shot = SCREENSHOT if os.environ.get("RAYBATCH_SCREENSHOT") else tmp_path / "shot.png"
            shot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000

        page.select_option("#f-prompt", "refused")
        refused = _visible_cards(page)
        page.select_option("#f-prompt", "")
        page.select_option("#f-status", "failed")
        failed_cards = _visible_cards(page)
        error_texts = page.eval_on_selector_all(
            "article.job:not([hidden]) .error", "els => els.map((e) => e.textContent)"
        )
        page.select_option("#f-status", "done")
        done_cards = _visible_cards(page)
        shown = page.inner_text("#shown")
        injected = page.eval_on_selector_all(".prompt b, h2 b", "els => els.length")
        context.close()  # before the server stops: see serve()

    assert media["videos"], "the page shows no video"
    for video in media["videos"]:
        assert video["error"] is None, video
        assert video["ready"] >= 1 and video["width"] > 0, video
        assert 0 < video["duration"] < float("inf"), video
    assert decoded > 0, "chromium decoded no frame of an H.264 result"
    for image in media["images"]:
        assert image["width"] > 0 and image["height"] > 0, image
    assert problems == []
    assert outside == []
    assert injected == 0, "a prompt's markup was rendered instead of shown as text"
    assert "refused" in prompts and len(prompts) >= 2
    assert len(refused) == failed and {c["prompt"] for c in refused} == {"refused"}
    assert len(failed_cards) == failed and {c["status"] for c in failed_cards} == {"failed"}
    assert len(error_texts) == failed and all("ContentModerated" in t for t in error_texts)
    assert len(done_cards) == total - failed and int(shown) == total - failed
    assert {c["status"] for c in done_cards} == {"done"}


def test_thousands_of_jobs_load_lazily_and_filter(browser: Any, demo: Path, tmp_path: Path) -> None:
    """A 3,000-job page shows every card, loads videos as they near the screen, and filters."""
    write_review_page(synthetic_library(demo, tmp_path / "out"))
    context, page, problems = _open(browser)
    with serve(tmp_path) as base:
        page.goto(f"{base}/out/index.html", wait_until="load")
        total = page.eval_on_selector_all("article.job", "cards => cards.length")
        last = page.locator("video").last.element_handle()
        before = last.evaluate("v => [v.readyState, v.preload, v.getAttribute('poster')]")
        last.scroll_into_view_if_needed()
        page.wait_for_function("v => v.readyState >= 1 || v.error", arg=last, timeout=20_000)
        after = last.evaluate("v => [v.readyState, v.duration, v.getAttribute('poster')]")
        page.select_option("#f-prompt", "p0999")
        one_prompt = _visible_cards(page)
        page.select_option("#f-prompt", "")
        page.select_option("#f-status", "failed")
        failed = _visible_cards(page)
        context.close()  # before the server stops: see serve()

    assert total == 3000
    assert before == [0, "none", None], "a video far down the page loaded with it"
    assert after[0] >= 1 and 0 < after[1] < float("inf") and after[2], after
    assert len(one_prompt) == 3 and {c["prompt"] for c in one_prompt} == {"p0999"}
    assert len(failed) == 1000 and {c["status"] for c in failed} == {"failed"}
    assert problems == []
