"""probe and decode_problem: rotation, sound, rate, truncation, files that are not media."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from runner.media import MediaCache, MediaError, decode_problem, probe
from tests.media_sources import SAMPLE_RATE, Clip, make_clip


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for this module's generated sources."""
    return tmp_path_factory.mktemp("probe")


@pytest.fixture(scope="module")
def talking(media: Path) -> Path:
    """10 s at 24 fps with AAC sound, fast-start."""
    return make_clip(media / "talking.mp4", Clip(frames=240, clicks=[1.0], audio_codec="aac"))


@pytest.mark.parametrize(("stored", "clockwise"), [(-90, 90), (90, 270), (180, 180), (0, 0)])
def test_rotation_is_read_from_the_display_matrix(media: Path, stored: int, clockwise: int) -> None:
    """A phone clip's display matrix becomes a clockwise quarter turn and upright dimensions."""
    path = make_clip(media / f"rot{stored}.mp4", Clip(frames=12, size=(96, 160), rotation=stored))
    info = probe(path)
    assert info.rotation == clockwise
    assert (info.upright_width, info.upright_height) == (96, 160)
    turned = clockwise in (90, 270)
    assert (info.width, info.height) == ((160, 96) if turned else (96, 160))


def test_sound_and_timing_facts(talking: Path) -> None:
    """Codec, pixel format, rate, length, frame count and the sound's codec, rate, channels."""
    info = probe(talking)
    assert (info.kind, info.codec, info.pixel_format) == ("video", "h264", "yuv420p")
    assert (info.fps, info.duration, info.frames) == (24.0, 10.0, 240)
    assert not info.variable_frame_rate
    assert (info.has_audio, info.audio_codec, info.sample_rate, info.channels) == (
        True,
        "aac",
        SAMPLE_RATE,
        1,
    )


def test_a_silent_clip_says_so(media: Path) -> None:
    """No audio stream: has_audio is False and the sound fields are empty."""
    info = probe(make_clip(media / "silent.mp4", Clip(frames=24)))
    assert not info.has_audio and info.audio_codec is None and info.channels is None


def test_a_variable_frame_rate_is_noticed(media: Path) -> None:
    """Frames 1/20 s and 1/40 s apart probe as variable, with their average rate."""
    times = [0.0]
    while len(times) < 90:
        times.append(times[-1] + (0.05 if len(times) % 3 else 0.025))
    info = probe(make_clip(media / "vfr.mp4", Clip(frames=len(times), times=times)))
    assert info.variable_frame_rate
    assert info.fps == pytest.approx(len(times) / (times[-1] + 0.05), rel=0.1)


def test_a_truncated_faststart_mp4_passes_probe_but_not_decode(
    talking: Path, tmp_path: Path
) -> None:
    """Header complete, data cut at 60 %: probe reads it, decode_problem says where it stops."""
    data = talking.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 6 // 10])
    info = probe(cut)
    assert info.duration == pytest.approx(10.0)
    problem = decode_problem(cut)
    assert problem is not None and problem.startswith("is truncated: its data stops at")
    assert "of 10.00 s" in problem
    assert decode_problem(talking) is None


def test_a_missing_last_frame_is_caught(talking: Path, tmp_path: Path) -> None:
    """Only the last few bytes missing: still truncated."""
    cut = tmp_path / "tail.mp4"
    cut.write_bytes(talking.read_bytes()[:-200])
    problem = decode_problem(cut)
    assert problem is not None and "truncated" in problem


def test_a_text_file_renamed_mp4_is_refused(tmp_path: Path) -> None:
    """Not media at all: MediaError with FFmpeg's reason, naming the file."""
    path = tmp_path / "notes.mp4"
    path.write_text("shot list\n" * 50)
    with pytest.raises(MediaError, match="Invalid data") as caught:
        probe(path)
    assert caught.value.path == path
    with pytest.raises(MediaError, match="Invalid data"):
        decode_problem(path)


def test_a_zero_length_file_is_refused(tmp_path: Path) -> None:
    """An empty file says it is empty."""
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(MediaError, match=r"is empty \(0 bytes\)"):
        probe(path)


def test_an_audio_only_file_has_no_video(tmp_path: Path) -> None:
    """Sound only: kind unknown with its sound facts; decode_problem says there is no video."""
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=SAMPLE_RATE, layout="stereo")
        frame = av.AudioFrame.from_ndarray(
            np.zeros((2, 1024), np.float32), format="fltp", layout="stereo"
        )
        frame.sample_rate = SAMPLE_RATE
        container.mux(stream.encode(frame))
        container.mux(stream.encode())
    info = probe(path)
    assert (info.kind, info.has_audio, info.channels) == ("unknown", True, 2)
    assert decode_problem(path) == "has no video stream"


def test_probe_results_live_in_the_callers_cache(talking: Path, tmp_path: Path) -> None:
    """With a cache an unchanged file is probed once; an edited one again; failures too."""
    path = tmp_path / "clip.mp4"
    shutil.copy(talking, path)
    cache = MediaCache()
    first = probe(path, cache)
    assert probe(path, cache) is first
    path.write_bytes(b"no longer a video" * 10)
    with pytest.raises(MediaError):
        probe(path, cache)
    assert len(cache) == 2
    with pytest.raises(MediaError):
        probe(path, cache)  # the failure is remembered as well
    assert len(cache) == 2
