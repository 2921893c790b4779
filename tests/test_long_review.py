"""A long clip on the review page, in a real browser (Debian's Chromium via Playwright): the
stitched shot beside its source, its seams marked where ``plan`` put them (a click plays
from there), and the look and every segment's files one click away. The README's
screenshot of it comes from here (RAYBATCH_SCREENSHOT=1 refreshes it)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from .conftest import MANIFESTS, ROOT, Emulator, run_cli
from .test_browser import _open, browser

pytestmark = pytest.mark.browser

SCREENSHOT = ROOT / "docs" / "review-long.png"
__all__ = ["browser"]  # the fixture, imported to be used here

_SEEK = """async (t) => {
  const card = document.querySelector('article.job[data-endpoint="local/stitch"]');
  const video = card.querySelector('video');
  video.muted = true;
  if (video.readyState < 1) {
    await new Promise((resolve) => video.addEventListener('loadedmetadata', resolve,
                                                           {once: true}));
  }
  card.querySelector(`.seam[data-t="${t}"]`).click();
  await new Promise((resolve) => setTimeout(resolve, 200));
  video.pause();
  return video.currentTime;
}"""


@pytest.mark.timeout(300)
def test_a_stitched_shot_shows_its_seams_and_parts(
    browser: Any, tmp_path: Path, emulator: Emulator
) -> None:
    """harbour (27 s) × one prompt, rendered: its look's card (judged there) and its
    stitched card stand beside the source; the stitched one has a
    mark at each planned seam (10 s and 17 s, placed along the bar by time), a click on a
    mark plays from that moment, and the look and each segment's render, start frame and
    prepared source are links to files that are there; no console error, and the page asks
    for nothing outside the run's folder."""
    media = tmp_path / "media" / "long"
    media.mkdir(parents=True)
    shutil.copy(MANIFESTS / "media" / "long" / "harbour.mp4", media)
    text = (MANIFESTS / "long.yaml").read_text()
    text = (
        text[: text.index("clips:")] + 'clips: [media/long/harbour.mp4]\nprompts: {noir: "noir"}\n'
    )
    manifest = tmp_path / "long.yaml"
    manifest.write_text(text)
    out = tmp_path / "out"
    done = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    planned = run_cli("plan", manifest, "--json", "--output-dir", out, cwd=tmp_path)
    [clip] = json.loads(planned.stdout)["segmented"]
    context, page, problems = _open(browser)
    outside: list[str] = []
    # From disk, as a user opens it: a page served by a static server without byte ranges
    # could not seek to a seam.
    base = tmp_path.as_uri()
    page.on(
        "request", lambda r: None if r.url.startswith((base, "data:")) else outside.append(r.url)
    )
    page.goto(f"{base}/out/index.html", wait_until="load")
    group = page.eval_on_selector(
        "section.group",
        """(g) => ({source: !!g.querySelector('figure.source'),
                   cards: Array.from(g.querySelectorAll('article.job'))
                     .map((a) => a.dataset.endpoint)})""",
    )
    marks = page.eval_on_selector_all(
        ".seam", "ms => ms.map((m) => ({t: Number(m.dataset.t), left: m.style.left}))"
    )
    links = page.eval_on_selector_all(
        ".parts a", "as => as.map((a) => ({text: a.textContent, href: a.href}))"
    )
    loaded = [Path(unquote(urlsplit(link["href"]).path)).is_file() for link in links]
    played = page.evaluate(_SEEK, f"{clip['seams'][1]:.3f}")
    if os.environ.get("RAYBATCH_SCREENSHOT"):
        page.screenshot(path=str(SCREENSHOT), clip={"x": 0, "y": 0, "width": 1000, "height": 620})
    context.close()
    assert group == {"source": True, "cards": ["luma/agent/uni-1/v1/edit", "local/stitch"]}
    assert [m["t"] for m in marks] == clip["seams"] == [10.0, 17.0]
    for mark in marks:
        assert float(mark["left"].rstrip("%")) == pytest.approx(100 * mark["t"] / 27.0, abs=0.01)
    texts = [link["text"] for link in links]
    assert texts == [
        "look",
        "seg 0",
        "source",
        "seg 1",
        "start",
        "source",
        "seg 2",
        "start",
        "source",
    ]
    assert all(loaded), links
    assert played == pytest.approx(17.0, abs=0.1)
    assert problems == [] and outside == []
