"""Sources a browser cannot play (ProRes, HEVC) get an H.264 proxy on the review page,
made once per content and cached under `.review/proxies/`; playable ones are shown as
they are."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from runner.media import probe
from runner.report._previews import PROXY_DIR, playable, source_proxies
from runner.session import RUN_PROXIES

from .conftest import MANIFESTS, Emulator, run_cli
from .media_sources import Clip, make_clip


def _library(tmp_path: Path) -> Path:
    """A manifest over an H.264 MP4 (the demo's city) and a ProRes MOV master."""
    media = tmp_path / "media"
    media.mkdir()
    shutil.copy(MANIFESTS / "media" / "city.mp4", media / "city.mp4")
    prores = Clip(frames=48, codec="prores_ks", pix_fmt="yuv422p10le", container_format="mov")
    make_clip(media / "master.mov", prores)
    manifest = tmp_path / "masters.yaml"
    manifest.write_text(
        "name: masters\nendpoint: luma/agent/ray/v3.2/video-to-video\n"
        'output: "{clip}/{prompt}.mp4"\nclips: [media/city.mp4, media/master.mov]\n'
        'prompts:\n  noir: "high-contrast black and white film noir"\n'
    )
    return manifest


def test_playable_tells_h264_from_prores(tmp_path: Path) -> None:
    """8-bit 4:2:0 H.264 plays as it is; ProRes and 10-bit H.264 do not."""
    assert playable(MANIFESTS / "media" / "city.mp4")
    prores = Clip(frames=4, codec="prores_ks", pix_fmt="yuv422p10le", container_format="mov")
    assert not playable(make_clip(tmp_path / "p.mov", prores))
    deep = Clip(frames=4, pix_fmt="yuv420p10le")
    assert not playable(make_clip(tmp_path / "deep.mp4", deep))


def test_a_prores_source_is_shown_through_a_cached_h264_proxy(
    tmp_path: Path, emulator: Emulator
) -> None:
    """`report` makes one proxy for the ProRes master and points the page at it (the
    original linked); the H.264 source is used as it is; a second report reuses both the
    proxy and the verdicts."""
    manifest = _library(tmp_path)
    out = tmp_path / "out"
    ran = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out)
    assert ran.returncode == 0, ran.stderr
    report = run_cli("report", manifest, "--output-dir", out)
    assert report.returncode == 0, report.stderr

    proxies = sorted((out / PROXY_DIR).glob("*.mp4"))
    assert len(proxies) == 1, proxies
    (proxy,) = proxies
    info = probe(proxy)
    assert (info.codec, info.pixel_format) == ("h264", "yuv420p")
    assert not list((out / PROXY_DIR).glob("*.part*"))
    verdicts = json.loads((out / PROXY_DIR / "playable.json").read_text())
    assert sorted(verdicts.values()) == [False, True]

    page = (out / "index.html").read_text()
    assert f'src="{proxy.relative_to(out).as_posix()}"' in page
    assert "shown as an H.264 copy" in page
    assert 'href="../media/master.mov"' in page, "the original stays one click away"
    assert 'src="../media/city.mp4"' in page, "a playable source is not copied"

    made = proxy.stat().st_mtime_ns
    again = run_cli("report", manifest, "--output-dir", out)
    assert again.returncode == 0, again.stderr
    assert proxy.stat().st_mtime_ns == made, "made once, then cached"


def test_a_refresh_makes_at_most_its_limit_of_proxies(tmp_path: Path) -> None:
    """With a run's limit (4), five ProRes sources get four proxies now and one later
    (shown as it is meanwhile); the next refresh makes the fifth."""
    prores = Clip(frames=4, codec="prores_ks", pix_fmt="yuv422p10le", container_format="mov")
    clip = make_clip(tmp_path / "m.mov", prores)
    # Proxies are named by the content's sha256: five names stand for five sources.
    videos = {hashlib.sha256(bytes([n])).hexdigest(): clip for n in range(RUN_PROXIES + 1)}
    first = source_proxies(tmp_path / "out", videos, limit=RUN_PROXIES)
    assert RUN_PROXIES == 4
    assert sum(v is not None for v in first.values()) == 4
    assert sum(v is None for v in first.values()) == 1
    second = source_proxies(tmp_path / "out", videos, limit=RUN_PROXIES)
    assert all(v is not None for v in second.values())
