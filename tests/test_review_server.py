"""``raybatch review`` in a real browser (Debian's Chromium through Playwright, as
tests/test_browser.py), and its guard against everything that is not the page it served.

The server is the real CLI in a child process, on 127.0.0.1; every request the page makes
must stay on it, and the page must log no console error.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from runner.state import StateStore

from .conftest import MANIFESTS, ROOT, Emulator, run_cli, spawn_cli
from .test_browser import browser, serve
from .test_looks import gated_manifest

__all__ = ["browser"]  # the fixture, shared with test_browser

pytestmark = pytest.mark.browser

LOOKS_SHOT = ROOT / "docs" / "looks-review.png"
#: True once every video that loads with the page shows a picture.
FIRST_SCREEN_SHOWN = """() => Array.from(document.querySelectorAll('video:not([data-lazy])'))
  .every((v) => v.readyState >= 2 || v.error)"""
#: True once fewer cards than ``n`` wait for a verdict (a verdict was taken).
FEWER_TO_JUDGE = "n => document.querySelectorAll('article.job[data-verdict=\"todo\"]').length < n"


@contextmanager
def reviewing(manifest: Path, out: Path) -> Iterator[str]:
    """``raybatch review`` running; yields the URL it printed (token and all)."""
    process = spawn_cli("review", manifest, "--output-dir", out, cwd=manifest.parent)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 30)
        assert ready, "raybatch review printed nothing"
        line = process.stdout.readline()
        assert " at http://127.0.0.1:" in line, (line, process.stderr and process.stderr.read())
        yield line.split(" at ", 1)[1].split()[0]
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def _origin(url: str) -> str:
    return url.split("/?", 1)[0]


def _open(browser: Any, origin: str) -> tuple[Any, Any, list[str], list[str]]:
    """A page in a fresh context, with its console errors and off-origin requests."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    problems: list[str] = []
    outside: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on(
        "request",
        lambda r: None if r.url.startswith((origin, "data:")) else outside.append(r.url),
    )
    return context, page, problems, outside


def _judgements(out: Path) -> dict[str, tuple[str | None, str | None]]:
    store = StateStore.open_readonly(out / "state.db")
    assert store is not None
    try:
        return {k: (j.verdict, j.note) for k, j in store.judgements().items()}
    finally:
        store.close()


def _looks_done(tmp_path: Path, emulator: Emulator) -> tuple[Path, Path]:
    manifest = gated_manifest(tmp_path, prompts=2)
    out = tmp_path / "out"
    done = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out)
    assert done.returncode == 0, done.stderr
    return manifest, out


def test_judging_by_click_and_key_survives_a_reload(
    browser: Any, tmp_path: Path, emulator: Emulator
) -> None:
    """Approve by click, reject by key, a note by key; a reload shows them (from the
    state); a rejected look is rolled again from the page; the static page shows the
    verdicts read-only; no console error, no request off loopback."""
    manifest, out = _looks_done(tmp_path, emulator)
    with reviewing(manifest, out) as url:
        origin = _origin(url)
        context, page, problems, outside = _open(browser, origin)
        page.goto(url, wait_until="load")
        looks = page.locator('article.job[data-kind="looks"]')
        assert looks.count() == 2
        first, second = looks.nth(0), looks.nth(1)
        assert first.get_attribute("data-verdict") == "todo"
        first.locator('button[data-act="approved"]').click()
        page.wait_for_function(
            "k => document.querySelector(`[data-key='${k}']`).dataset.verdict === 'approved'",
            arg=first.get_attribute("data-key"),
        )
        page.keyboard.press("j")
        page.keyboard.press("r")
        page.wait_for_function(
            "k => document.querySelector(`[data-key='${k}']`).dataset.verdict === 'rejected'",
            arg=second.get_attribute("data-key"),
        )
        page.keyboard.press("n")
        page.keyboard.type("too dark, try again")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('p.note:not([hidden])')")

        page.reload(wait_until="load")
        verdicts = page.eval_on_selector_all(
            'article.job[data-kind="looks"]', "cards => cards.map((c) => c.dataset.verdict)"
        )
        note = page.inner_text('article.job[data-verdict="rejected"] p.note')
        page.select_option("#f-verdict", "todo")
        to_judge = page.locator("article.job:not([hidden])").count()
        page.select_option("#f-verdict", "")

        page.locator('article.job[data-verdict="rejected"] button[data-act="reroll"]').click()
        page.wait_for_function("() => document.getElementById('message').textContent")
        message = page.inner_text("#message")
        page.reload(wait_until="load")
        after = page.locator('article.job[data-kind="looks"]').count()
        context.close()

    assert verdicts == ["approved", "rejected"]
    assert note == "too dark, try again"
    assert to_judge == 0
    assert "take 2" in message
    assert after == 3, "the new take's look is on the page"
    assert sorted(str(v) for v, _n in _judgements(out).values()) == ["approved", "rejected"]
    assert problems == [] and outside == []

    report = run_cli("report", manifest, "--output-dir", out)
    assert report.returncode == 0, report.stderr
    context, page, problems, _outside = _open(browser, "file://")
    page.goto((out / "index.html").as_uri(), wait_until="load")
    static = page.eval_on_selector_all(
        'article.job[data-kind="looks"]', "cards => cards.map((c) => c.dataset.verdict)"
    )
    buttons = page.locator("button[data-act]").count()
    shown_note = page.inner_text('article.job[data-verdict="rejected"] p.note')
    context.close()
    assert static[:2] == ["approved", "rejected"] and buttons == 0
    assert shown_note == "too dark, try again"
    assert problems == []


def test_the_guard_refuses_what_the_page_did_not_send(
    browser: Any, tmp_path: Path, emulator: Emulator
) -> None:
    """Without the session's token, with a foreign Host or Origin, or from a stray page
    in the same browser: 403, and no verdict is written; the page's own request passes."""
    manifest, out = _looks_done(tmp_path, emulator)
    with reviewing(manifest, out) as url:
        origin = _origin(url)
        port = origin.rsplit(":", 1)[1]
        token = url.split("token=", 1)[1]
        with httpx.Client(base_url=origin, timeout=10) as client:
            assert client.get("/").status_code == 403
            assert client.get("/?token=wrong").status_code == 403
            foreign = {"Host": f"evil.example:{port}"}
            assert client.get(f"/?token={token}", headers=foreign).status_code == 403
            entered = client.get(f"/?token={token}")
            assert entered.status_code == 303 and client.cookies
            page_html = client.get("/").text
            key = page_html.split('data-kind="looks"', 1)[0].rsplit('data-key="', 1)[1][:64]
            body = {"key": key, "verdict": "approved"}
            assert client.post("/api/verdict", json=body).status_code == 403
            signed = {"X-Raybatch-Token": token}
            assert (
                client.post("/api/verdict", json=body, headers=signed | foreign).status_code == 403
            )
            evil = signed | {"Origin": "http://evil.example"}
            assert client.post("/api/verdict", json=body, headers=evil).status_code == 403
            assert client.get("/files/state.db").status_code == 404
            assert client.get("/files/../state.db").status_code in (403, 404)
            assert _judgements(out) == {}

            context, page, problems, _outside = _open(browser, origin)
            page.goto(url, wait_until="load")  # this browser now holds the session cookie
            stray_dir = tmp_path / "stray"
            stray_dir.mkdir()
            (stray_dir / "index.html").write_text("<!doctype html><title>stray</title>")
            with serve(stray_dir) as stray:
                stray_page = context.new_page()
                stray_page.goto(f"{stray}/index.html")
                # A simple (no-cors) POST is sent with the browser's cookies for a same-site
                # origin, but without the token header no page but the served one knows.
                sent = stray_page.evaluate(
                    """([target, key]) => fetch(target + '/api/verdict', {method: 'POST',
                       mode: 'no-cors', credentials: 'include',
                       body: JSON.stringify({key: key, verdict: 'approved'})})
                       .then(() => 'answered', (e) => 'refused: ' + e)""",
                    [origin, key],
                )
                assert sent.startswith(("answered", "refused"))
                stray_page.close()
            assert _judgements(out) == {}, "a stray page voted"
            assert client.post("/api/verdict", json=body, headers=signed).status_code == 200
            context.close()
    assert _judgements(out) == {key: ("approved", None)}
    assert problems == []


def _wait(what: str, check: Any, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)


def _count(out: Path, role: str | None, state: str | None = None) -> int:
    store = StateStore.open_readonly(out / "state.db")
    if store is None:
        return 0
    try:
        return sum(
            1
            for r in store.rows()
            if r.kind == "remote" and r.role == role and (state is None or r.state == state)
        )
    finally:
        store.close()


def _submitted(out: Path, endpoint: str) -> int:
    store = StateStore.open_readonly(out / "state.db")
    assert store is not None
    try:
        rows = {r.key: r.endpoint for r in store.rows()}
        return sum(1 for a in store.attempts() if rows[a["key"]] == endpoint)
    finally:
        store.close()


def test_looks_first_demo_from_judging_to_delivery(browser: Any, tmp_path: Path) -> None:
    """The offline demo with takes: 2 and gate: looks: a run waits for verdicts; the looks
    are judged in the served page and only the approved ones render; the videos are
    judged there too, and the approved ones are exported with a timeline."""
    shutil.copytree(MANIFESTS / "media", tmp_path / "media", ignore=shutil.ignore_patterns("*.py"))
    manifest = tmp_path / "looks.yaml"
    shutil.copy(MANIFESTS / "looks.yaml", manifest)
    out = tmp_path / "out"
    run = spawn_cli(
        "run", manifest, "--local", "--output-dir", out, "--wait-for-verdicts", cwd=tmp_path
    )
    try:
        _wait("the 18 looks", lambda: _count(out, "look", "done") == 18)
        assert run.poll() is None, "the run should wait for verdicts"
        assert _submitted(out, "luma/agent/ray/v3.2/video-to-video") == 0
        with reviewing(manifest, out) as url:
            context, page, problems, outside = _open(browser, _origin(url))
            page.goto(url, wait_until="load")
            page.select_option("#f-verdict", "todo")
            assert page.locator("article.job:not([hidden])").count() == 18
            page.keyboard.press("j")
            # Per clip: noir take 1 and sepia take 2 approved, the other four rejected.
            for key in "arrarr" * 3:
                before = page.locator('article.job[data-verdict="todo"]').count()
                page.keyboard.press(key)
                page.wait_for_function(FEWER_TO_JUDGE, arg=before)
            stdout, stderr = run.communicate(timeout=120)
            assert run.returncode == 0, stderr
            assert _count(out, None, "done") == 6 and _count(out, None, "blocked") == 12
            assert _submitted(out, "luma/agent/ray/v3.2/video-to-video") == 6

            page.wait_for_function(
                "() => document.querySelector('#message button')", timeout=20_000
            )
            page.click("#message button")  # "show them": the page reloads with the videos
            page.wait_for_load_state("load")
            page.select_option("#f-verdict", "todo")
            videos = page.locator("article.job:not([hidden])")
            assert videos.count() == 6
            # The first by click; each verdict moves on to the next video to judge.
            videos.nth(0).locator('button[data-act="approved"]').click()
            page.wait_for_function(FEWER_TO_JUDGE, arg=6)
            for key in "araar":
                before = page.locator('article.job[data-verdict="todo"]').count()
                page.keyboard.press(key)
                page.wait_for_function(FEWER_TO_JUDGE, arg=before)
            page.reload(wait_until="load")  # the header counts the verdicts as they stand
            page.select_option("#f-verdict", "")
            page.wait_for_function(FIRST_SCREEN_SHOWN, timeout=30_000)
            shot = LOOKS_SHOT if os.environ.get("RAYBATCH_SCREENSHOT") else tmp_path / "looks.png"
            page.screenshot(path=str(shot))
            context.close()
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert problems == [] and outside == []

    delivered = tmp_path / "delivery"
    exported = run_cli("export", manifest, "--output-dir", out, "--to", delivered)
    assert exported.returncode == 0, exported.stderr
    videos_out = sorted(p.name for p in delivered.glob("*.mp4"))
    assert len(videos_out) == 4
    import opentimelineio as otio

    timeline = otio.adapters.read_from_file(str(delivered / "timeline.otio"))
    restyled = [
        c
        for t in timeline.tracks
        if t.name != "source"
        for c in t
        if isinstance(c, otio.schema.Clip)
    ]
    assert sorted(c.name for c in restyled) == videos_out


def _session_client(url: str) -> tuple[httpx.Client, dict[str, str]]:
    """An HTTP client holding the review session's cookie, and the header a change needs."""
    origin, token = _origin(url), url.split("token=", 1)[1]
    client = httpx.Client(base_url=origin, timeout=10)
    assert client.get(f"/?token={token}").status_code == 303
    return client, {"X-Raybatch-Token": token}


def test_two_servers_and_a_waiting_run_share_one_state(tmp_path: Path, emulator: Emulator) -> None:
    """Two review servers on one state each write a verdict (SQLite serialises their
    writers); a run waiting for verdicts sees both and renders only the approved look's
    video."""
    from .test_looks import done_look, waiting_run

    manifest = gated_manifest(tmp_path, prompts=2)
    out = tmp_path / "out"
    with waiting_run(manifest, emulator) as run:
        first, second = done_look(manifest, "p0"), done_look(manifest, "p1")
        with reviewing(manifest, out) as one, reviewing(manifest, out) as two:
            client_one, signed_one = _session_client(one)
            client_two, signed_two = _session_client(two)
            try:
                approve = {"key": first.key, "verdict": "approved"}
                reject = {"key": second.key, "verdict": "rejected"}
                assert client_one.post("/api/verdict", json=approve, headers=signed_one).is_success
                assert client_two.post("/api/verdict", json=reject, headers=signed_two).is_success
                # One server's session opens nothing on the other (a cookie per port).
                with httpx.Client(base_url=_origin(two), cookies=client_one.cookies) as other:
                    assert other.get("/api/jobs").status_code == 403
            finally:
                client_one.close()
                client_two.close()
        _stdout, stderr = run.communicate(timeout=60)
    assert run.returncode == 0, stderr
    assert _judgements(out) == {first.key: ("approved", None), second.key: ("rejected", None)}
    assert _submitted(out, "luma/agent/ray/v3.2/video-to-video") == 1
