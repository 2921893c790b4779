"""Probing media with PyAV, hashing local files, and what the manifest reports about both."""

from __future__ import annotations

import hashlib
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent

import av
import numpy as np
import pytest

from runner.errors import ManifestError
from runner.manifest import plan
from runner.media import (
    MediaCache,
    MediaError,
    content_type,
    local_file,
    probe,
    probe_remote,
    reference_problem,
)

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / "manifests" / "media"
DATA = ROOT / "tests" / "data"


def _encode(path: Path, codec: str, frames: int, *, fmt: str | None = None) -> Path:
    """Write ``frames`` small frames with ``codec`` (a GIF, a WebM...) and return the path."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = 32, 24
        stream.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"
        for index in range(frames):
            image = np.full((24, 32, 3), index * 40 % 255, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_probe_reads_a_real_clip() -> None:
    """A small H.264 MP4 probes as a video with its codec, size, length and frame count."""
    info = probe(MEDIA / "city.mp4")
    assert info.kind == "video"
    assert info.codec == "h264"
    assert (info.width, info.height) == (320, 180)
    assert info.duration == pytest.approx(2.0)
    assert info.frames == 48
    assert info.size == (MEDIA / "city.mp4").stat().st_size
    assert "mp4" in info.container


@pytest.mark.parametrize(
    ("name", "codec", "size"),
    [("portrait.png", "png", (384, 512)), ("skyline.jpg", "mjpeg", (512, 288))],
)
def test_probe_reads_real_stills(name: str, codec: str, size: tuple[int, int]) -> None:
    """PNG and JPEG stills probe as images with their dimensions and no duration."""
    info = probe(MEDIA / name)
    assert (info.kind, info.codec, (info.width, info.height)) == ("image", codec, size)
    assert info.duration is None
    assert info.fits("image") and not info.fits("video")


def test_probe_measures_a_long_clip() -> None:
    """The 12 s fixture measures 12 s (the limit check relies on this)."""
    assert probe(DATA / "long_clip.mp4").duration == pytest.approx(12.0)


def test_probe_refuses_a_corrupt_file() -> None:
    """An MP4 signature with junk behind it raises MediaError with FFmpeg's reason."""
    with pytest.raises(MediaError, match="Invalid data") as caught:
        probe(DATA / "corrupt.mp4")
    assert caught.value.path == DATA / "corrupt.mp4"


def test_probe_reports_a_missing_file(tmp_path: Path) -> None:
    """A path that does not exist raises MediaError, not OSError."""
    with pytest.raises(MediaError, match="No such file"):
        probe(tmp_path / "nope.mp4")


def test_gifs_are_clips_or_stills_by_their_frames(tmp_path: Path) -> None:
    """An animated GIF is a video; a one-frame GIF is an image; either may serve as a still."""
    moving = probe(_encode(tmp_path / "moving.gif", "gif", 6))
    still = probe(_encode(tmp_path / "still.gif", "gif", 1))
    assert moving.kind == "video" and moving.fits("image")
    assert still.kind == "image"


@pytest.mark.skipif("libvpx-vp9" not in av.codecs_available, reason="no VP9 encoder")
def test_probe_reads_webm(tmp_path: Path) -> None:
    """A VP9 WebM probes as a video with its codec."""
    info = probe(_encode(tmp_path / "clip.webm", "libvpx-vp9", 10))
    assert (info.kind, info.codec) == ("video", "vp9")
    assert info.duration == pytest.approx(1.0, abs=0.2)


def test_audio_only_file_is_neither_video_nor_image(tmp_path: Path) -> None:
    """A file with no video stream probes as kind unknown."""
    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        frame.sample_rate = 44100
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    info = probe(path)
    assert info.kind == "unknown" and not info.fits("video")


def test_local_file_hashes_once_and_notices_changes(tmp_path: Path) -> None:
    """The sha256 is of the bytes, kept in the caller's cache while the file is unchanged."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"first version")
    cache = MediaCache()
    first = local_file(path, cache)
    assert first.sha256 == hashlib.sha256(b"first version").hexdigest()
    assert (first.size, first.content_type) == (13, "video/mp4")
    assert local_file(path, cache) is first
    assert local_file(path) is not first  # no cache passed: nothing is remembered anywhere
    path.write_bytes(b"second version!")
    os.utime(path, ns=(1, 1))
    second = local_file(path, cache)
    assert second.sha256 == hashlib.sha256(b"second version!").hexdigest()
    assert second.placeholder == "@local:" + second.sha256


def test_a_same_size_rewrite_with_the_old_mtime_is_hashed_again(tmp_path: Path) -> None:
    """Bytes rewritten to the same size with the mtime set back are noticed (ctime moved)."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"aaaa")
    os.utime(path, ns=(5, 5))
    cache = MediaCache()
    before = local_file(path, cache)
    old_ctime = path.stat().st_ctime_ns
    path.write_bytes(b"bbbb")
    os.utime(path, ns=(5, 5))
    if path.stat().st_ctime_ns == old_ctime:
        pytest.skip("this file system's ctime is too coarse to tell the two writes apart")
    after = local_file(path, cache)
    assert after.sha256 == hashlib.sha256(b"bbbb").hexdigest() != before.sha256


def test_media_cache_is_bounded(tmp_path: Path) -> None:
    """A MediaCache forgets its least recently used entries beyond its limit."""
    cache = MediaCache(limit=2)
    paths = [tmp_path / f"{name}.mp4" for name in "abc"]
    for path in paths:
        path.write_bytes(path.name.encode())
    first = local_file(paths[0], cache)
    local_file(paths[1], cache)
    assert local_file(paths[0], cache) is first  # a hit makes it the most recent
    local_file(paths[2], cache)  # forgets b, the least recent
    assert len(cache) == 2
    assert local_file(paths[0], cache) is first
    with pytest.raises(ValueError):
        MediaCache(limit=0)


@pytest.mark.parametrize(
    ("name", "mime"),
    [
        ("a.mp4", "video/mp4"),
        ("a.MOV", "video/quicktime"),
        ("a.webm", "video/webm"),
        ("a.png", "image/png"),
        ("a.jpeg", "image/jpeg"),
        ("a.avif", "image/avif"),
        ("a.xyz", "application/octet-stream"),
    ],
)
def test_content_type_by_extension(name: str, mime: str) -> None:
    """Uploads are labelled by extension, case-insensitively."""
    assert content_type(Path(name)) == mime


@pytest.mark.parametrize(
    ("reference", "problem"),
    [
        ("https://example.com/a.mp4", None),
        ("http://example.com/a.mp4?sig=1", None),
        ("data:video/mp4;base64,AAAA", None),
        ("data:video/mp4;base64", "needs a ','"),
        ("file:///home/me/a.mp4", "file:// URLs are not accepted"),
        ("ftp://example.com/a.mp4", "scheme ftp:// is not accepted"),
        ("s3://bucket/a.mp4", "scheme s3:// is not accepted"),
        ("https:///a.mp4", "has no host"),
    ],
)
def test_only_http_and_data_references_travel(reference: str, problem: str | None) -> None:
    """http(s) with a host and data: URIs may be sent to fal; other schemes are refused."""
    found = reference_problem(reference)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server over tmp_path (for the optional remote probe)."""
    shutil.copy(MEDIA / "portrait.png", tmp_path / "portrait.png")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        """Serves tmp_path without logging every request."""

        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_probe_remote_reads_type_and_size(http_server: str) -> None:
    """A HEAD tells the remote file's kind and size; a 404 is a MediaError."""
    info = probe_remote(f"{http_server}/portrait.png")
    assert (info.kind, info.size) == ("image", (MEDIA / "portrait.png").stat().st_size)
    with pytest.raises(MediaError, match="HTTP 404"):
        probe_remote(f"{http_server}/missing.mp4")
    assert probe_remote("data:video/mp4;base64,AAAA").kind == "video"


def test_remote_probe_is_opt_in_and_checks_kind(http_server: str, tmp_path: Path) -> None:
    """With probe_remote, a URL clip that serves a PNG is refused; without, nothing is asked."""
    path = tmp_path / "remote.yaml"
    path.write_text(
        "name: r\nendpoint: luma/agent/ray/v3.2/video-to-video\nprompts: {a: b}\n"
        f"clips: ['{http_server}/portrait.png']\n"
    )
    assert len(plan(path).jobs) == 1
    [problem] = _problems(path, probe_remote=True)
    assert problem.endswith("portrait.png: is an image, but video-to-video needs a video here")


def _manifest(
    tmp_path: Path, clips: str, endpoint: str = "video-to-video", defaults: str = "{}"
) -> Path:
    """A one-prompt manifest over ``clips`` (a YAML list body), media copied beside it."""
    media = tmp_path / "media"
    media.mkdir(exist_ok=True)
    for source in (*MEDIA.glob("*.*"), *DATA.glob("*.mp4")):
        shutil.copy(source, media / source.name)
    path = tmp_path / "m.yaml"
    path.write_text(
        dedent(
            f"""\
            name: media-test
            endpoint: luma/agent/ray/v3.2/{endpoint}
            defaults: {defaults}
            prompts: {{noir: "film noir"}}
            clips:
            """
        )
        + clips
    )
    return path


def _problems(path: Path, *, probe_remote: bool = False) -> list[str]:
    """What stops ``plan``/``run``: the manifest's problems or the sources left out."""
    with pytest.raises(ManifestError) as caught:
        refusal = plan(path, probe_remote=probe_remote).bad_source_error()
        if refusal is not None:
            raise refusal
    return [
        str(problem)
        for problem in caught.value.problems
        if "nothing was submitted" not in str(problem)
    ]


def test_a_clip_over_the_length_cap_names_its_length_and_the_cap(tmp_path: Path) -> None:
    """A 12 s clip over ``segments.max_source`` (10 s here) is refused with both lengths."""
    path = _manifest(tmp_path, "  - media/city.mp4\n  - media/long_clip.mp4\n")
    path.write_text(path.read_text() + "segments: {max_source: 10s}\n")
    assert _problems(path) == [
        f"{path}:7: clips[1]: media/long_clip.mp4: 12 s long, over the longest clip"
        " raybatch cuts (10 s, segments.max_source at segments); raise max_source or trim"
        " the clip"
    ]


def test_a_clip_longer_than_a_render_is_cut_whatever_the_source_limit(tmp_path: Path) -> None:
    """A 12 s clip is cut into renders of at most 10 s and stitched back, with or without a
    raised longest-source limit, which applies to what is sent (each segment)."""
    path = _manifest(tmp_path, "  - media/long_clip.mp4\n")
    path.write_text(
        path.read_text()
        + "limits:\n  luma/agent/ray/v3.2/video-to-video: {max_source_seconds: 18}\n"
    )
    result = plan(path)
    endpoints = [job.endpoint for job in result.jobs]
    assert endpoints.count("local/stitch") == 1
    renders = [job for job in result.jobs if job.endpoint.endswith("video-to-video")]
    assert [job.arguments["duration"] for job in renders] == ["10s", "5s"]
    applied = {limit["name"]: limit for limit in result.limits_applied}
    assert applied["max_source_seconds"]["user"] is True
    assert applied["max_file_bytes"]["user"] is False


def test_unprobed_plan_skips_the_length_check(tmp_path: Path) -> None:
    """probe_media=False reads no headers, so only hashing and size checks remain."""
    path = _manifest(tmp_path, "  - media/long_clip.mp4\n")
    assert len(plan(path, probe_media=False).jobs) == 1


def test_image_given_as_a_clip_names_the_measured_kind(tmp_path: Path) -> None:
    """A PNG renamed .mp4 and listed as a clip is refused as an image."""
    shutil.copy(MEDIA / "portrait.png", tmp_path / "still.mp4")
    path = _manifest(tmp_path, "  - still.mp4\n")
    [problem] = _problems(path)
    assert problem.endswith(
        "clips[0]: still.mp4: is an image, but video-to-video needs a video here"
    )


def test_corrupt_clip_could_not_be_read(tmp_path: Path) -> None:
    """An undecodable clip is refused with the reader's reason."""
    path = _manifest(tmp_path, "  - media/corrupt.mp4\n")
    [problem] = _problems(path)
    assert "media/corrupt.mp4: could not be read as video: Invalid data" in problem


def test_unaccepted_container_is_refused(tmp_path: Path) -> None:
    """A .mkv clip is refused by its extension with the accepted list and its source."""
    shutil.copy(MEDIA / "city.mp4", tmp_path / "city.mkv")
    path = _manifest(tmp_path, "  - city.mkv\n")
    [problem] = _problems(path)
    assert ".mkv files are not accepted by video-to-video (accepted: mp4, mov" in problem


def test_reframe_cost_uses_the_probed_length(tmp_path: Path) -> None:
    """Reframe is priced per started source second of the probed clip: 2 s at 540p = $0.12."""
    path = _manifest(tmp_path, "  - media/city.mp4\n", "reframe", '{aspect_ratio: "21:9"}')
    [job] = plan(path).jobs
    assert job.estimated_cost == pytest.approx(0.12)
    [unpriced] = plan(path, probe_media=False).jobs
    assert unpriced.estimated_cost is None


def test_the_media_package_has_one_public_surface() -> None:
    """``runner.media.__all__`` lists exactly its public names, those it imports on first
    use included, and each of them exists."""
    import runner.media as media
    from tests.test_public_surface import public_names

    assert set(media.__all__) == public_names(media)
    assert len(media.__all__) == len(set(media.__all__))
