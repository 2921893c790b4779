"""extract_frame, detect_shots and make_proxy on generated clips."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from runner.media import MediaError, Which, detect_shots, extract_frame, make_proxy, probe
from tests.media_sources import Clip, click_times, make_clip, read_index, read_indices


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for this module's generated sources."""
    return tmp_path_factory.mktemp("frames")


@pytest.fixture(scope="module")
def phone(media: Path) -> Path:
    """A 4 s portrait phone clip stored landscape with a 90° rotation, 24 fps."""
    return make_clip(media / "phone.mp4", Clip(frames=96, size=(96, 160), rotation=-90))


def picture(path: Path) -> np.ndarray:
    """The RGB pixels of a still file."""
    with av.open(str(path)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


@pytest.mark.parametrize(("which", "index"), [("first", 0), ("last", 95), (2.0, 48), (2.02, 48)])
def test_extract_frame_picks_the_frame_upright(
    phone: Path, tmp_path: Path, which: Which, index: int
) -> None:
    """First, last or the frame on screen at a time, as an upright PNG."""
    dest = extract_frame(phone, which, tmp_path / "still.png")
    image = picture(dest)
    assert image.shape[:2] == (160, 96)
    assert read_index(image) == index


def test_extract_frame_writes_a_capped_jpeg(phone: Path, tmp_path: Path) -> None:
    """max_size caps the longer side; a .jpg name gives a JPEG that still reads right."""
    dest = extract_frame(phone, "last", tmp_path / "still.jpg", max_size=80)
    assert dest.read_bytes()[:2] == b"\xff\xd8"
    image = picture(dest)
    assert image.shape[:2] == (80, 48) and read_index(image) == 95
    png = extract_frame(phone, "first", tmp_path / "still.part", fmt="png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_extract_frame_refuses_a_time_outside_the_clip(phone: Path, tmp_path: Path) -> None:
    """A moment past the end is a MediaError naming the clip."""
    with pytest.raises(MediaError, match="has no frame at 9.000 s") as caught:
        extract_frame(phone, 9.0, tmp_path / "x.png")
    assert caught.value.path == phone


def shots_clip(path: Path, cuts: list[float], seconds: float, fps: int = 24) -> Path:
    """A clip whose picture changes completely at each cut, with slow motion within shots."""
    palette = [(220, 40, 40), (30, 200, 60), (40, 60, 230), (230, 220, 40), (200, 40, 200)]
    edges = [0.0, *cuts]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        for index in range(round(seconds * fps)):
            shot = sum(1 for edge in edges if index / fps >= edge) - 1
            image = np.empty((96, 160, 3), np.uint8)
            image[:] = palette[shot % len(palette)]
            left = (index * 2) % 140
            image[30:60, left : left + 20] = 255  # a square drifting within the shot
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def shots(media: Path) -> Path:
    """10 s with hard cuts at 2.5 s, 6 s and 7.25 s."""
    return shots_clip(media / "shots.mp4", [2.5, 6.0, 7.25], 10.0)


def test_detect_shots_finds_hard_cuts_at_their_frames(shots: Path) -> None:
    """Cuts at 2.5 s, 6 s and 7.25 s are found at those frames, and nothing else."""
    assert detect_shots(shots) == pytest.approx([2.5, 6.0, 7.25], abs=1e-6)


def test_detect_shots_ignores_cuts_closer_than_the_minimum(shots: Path) -> None:
    """With min_shot_seconds=2, the cut 1.25 s after another is not a new shot."""
    assert detect_shots(shots, min_shot_seconds=2.0) == pytest.approx([2.5, 6.0])


def test_detect_shots_leaves_ffmpeg_logging_alone(
    shots: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Shot detection does not switch FFmpeg's own logging on for the rest of the process."""
    detect_shots(shots)
    capfd.readouterr()
    make_clip(tmp_path / "after.mp4", Clip(frames=5))  # libx264 logs its statistics if on
    assert "libx264" not in capfd.readouterr().err


def test_detect_shots_on_a_non_video_is_a_media_error(tmp_path: Path) -> None:
    """A text file is refused with the file named."""
    path = tmp_path / "notes.mp4"
    path.write_text("nothing here\n" * 30)
    with pytest.raises(MediaError) as caught:
        detect_shots(path)
    assert caught.value.path == path


def test_a_prores_master_gets_a_browser_proxy(media: Path, tmp_path: Path) -> None:
    """ProRes with PCM sound, rotated, 50 fps: the proxy is H.264/AAC, upright, <=30 fps."""
    master = make_clip(
        media / "master.mov",
        Clip(
            frames=200,
            fps=Fraction(50),
            size=(96, 160),
            rotation=-90,
            codec="prores_ks",
            pix_fmt="yuv422p10le",
            container_format="mov",
            clicks=[1.0, 3.5],
            audio_codec="pcm_s16le",
        ),
    )
    proxy = make_proxy(master, tmp_path / "proxy.mp4", max_height=48)
    info = probe(proxy)
    assert (info.codec, info.pixel_format, info.audio_codec) == ("h264", "yuv420p", "aac")
    assert (info.width, info.height, info.rotation) == (48, 80, 0)
    assert info.fps == 30 and info.duration == pytest.approx(4.0, abs=1 / 30)
    data = proxy.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "fast-start: the index comes first"
    assert read_indices(proxy)[::15] == [round(i * 50 / 30) for i in range(0, 120, 15)]
    assert click_times(proxy) == pytest.approx([1.0, 3.5], abs=1 / 30)
