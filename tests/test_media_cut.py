"""cut_segment: exact frames, stream copy on keyframes, scaling, rotation, rates, size limits."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import pytest

from runner.errors import DiskError
from runner.media import MediaError, Segment, cut_segment, plan_segments, probe
from runner.media._decode import VideoSource, decode_threads
from tests.media_sources import Clip, decoded, make_clip, on_screen, read_index, read_indices

# Keyframes every 5 s exactly (no scene-cut keyframes), B-frames on: a segment grid of 5 s
# lands on IDR frames.
GOP_5S = {"x264-params": "keyint=120:min-keyint=120:scenecut=0", "bf": "3"}


def segment(first: int, frames: int, rate: int = 24, seconds: int = 5) -> Segment:
    """A segment rendering ``frames`` frames from ``first``, kept whole."""
    return Segment(0, rate, first, frames, seconds, first, first + frames, first)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for this module's generated sources."""
    return tmp_path_factory.mktemp("cut")


@pytest.fixture(scope="module")
def gop_clip(media: Path) -> Path:
    """20 s at 24 fps, an IDR frame every 5 s, B-frames."""
    return make_clip(media / "gop.mp4", Clip(frames=480, options=GOP_5S))


def packets(path: Path, start: float = 0.0, end: float = 1e9) -> list[bytes]:
    """The video packets of ``path`` in decode order whose times lie in [start, end)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        base = stream.time_base
        assert base is not None
        return [
            bytes(packet)
            for packet in container.demux(stream)
            if packet.pts is not None and packet.size and start <= packet.pts * base < end
        ]


def test_a_segment_on_keyframes_is_copied_byte_for_byte(gop_clip: Path, tmp_path: Path) -> None:
    """5-10 s of a clip with IDR frames at 5 s and 10 s: the source's own packets, unchanged."""
    info = cut_segment(gop_clip, segment(120, 120), tmp_path / "copy.mp4", max_height=1080)
    assert info.copied and info.crf is None
    assert packets(tmp_path / "copy.mp4") == packets(gop_clip, 5.0, 10.0)
    assert read_indices(tmp_path / "copy.mp4") == list(range(120, 240))
    assert probe(tmp_path / "copy.mp4").duration == pytest.approx(5.0)


def test_a_segment_off_keyframes_is_re_encoded_exactly(gop_clip: Path, tmp_path: Path) -> None:
    """One frame later, no copy is possible: re-encoded, still exactly frames 121-240."""
    info = cut_segment(gop_clip, segment(121, 120), tmp_path / "cut.mp4")
    assert not info.copied and info.crf == 17
    assert read_indices(tmp_path / "cut.mp4") == list(range(121, 241))
    assert info.frames == 120 and info.rate == 24


def test_the_last_segment_of_a_plan_ends_with_the_source(gop_clip: Path, tmp_path: Path) -> None:
    """A 20 s clip cut by a 10 s plan: two segments, every frame in order, the last too."""
    plan = plan_segments(20.0, 24, length="10s")
    seen: list[int] = []
    for part in plan.segments:
        info = cut_segment(gop_clip, part, tmp_path / f"{part.index}.mp4")
        assert info.copied  # 0 s, 10 s and the end all sit on IDR frames
        seen += read_indices(info.path)
    assert seen == list(range(480))


def test_a_needed_change_disables_the_copy(gop_clip: Path, tmp_path: Path) -> None:
    """Scaling down is a change: the same keyframe-aligned segment is re-encoded, smaller."""
    info = cut_segment(gop_clip, segment(120, 120), tmp_path / "small.mp4", max_height=48)
    assert not info.copied and (info.width, info.height) == (80, 48)
    assert read_indices(tmp_path / "small.mp4") == list(range(120, 240))


def test_scaling_caps_the_shorter_side_and_never_upscales(media: Path, tmp_path: Path) -> None:
    """A 320x180 source at 90p is 160x90; at 1080p it stays 320x180."""
    source = make_clip(media / "wide.mp4", Clip(frames=130, size=(320, 180)))
    small = cut_segment(source, segment(0, 120), tmp_path / "90.mp4", max_height=90)
    assert (small.width, small.height) == (160, 90)
    assert read_indices(small.path) == list(range(120))
    same = cut_segment(source, segment(0, 120), tmp_path / "1080.mp4", max_height=1080)
    assert (same.width, same.height) == (320, 180)
    capped = cut_segment(source, segment(0, 120), tmp_path / "long.mp4", max_size=200)
    assert (capped.width, capped.height) == (200, 112)


def test_a_rotated_phone_clip_comes_out_upright(media: Path, tmp_path: Path) -> None:
    """Stored landscape with a 90° display rotation: the segment is portrait, upright, unrotated."""
    source = make_clip(media / "phone.mp4", Clip(frames=130, size=(96, 160), rotation=-90))
    assert probe(source).rotation == 90
    assert (probe(source).upright_width, probe(source).upright_height) == (96, 160)
    info = cut_segment(source, segment(0, 120), tmp_path / "upright.mp4")
    assert (info.width, info.height) == (96, 160) and not info.copied
    written = probe(info.path)
    assert written.rotation == 0 and (written.width, written.height) == (96, 160)
    assert read_indices(info.path) == list(range(120))


@pytest.mark.parametrize(
    ("fps", "rate"),
    [(Fraction(30000, 1001), 30), (Fraction(24000, 1001), 24), (Fraction(25, 2), 13)],
)
def test_odd_frame_rates_become_constant_with_the_right_count(
    media: Path, tmp_path: Path, fps: Fraction, rate: int
) -> None:
    """29.97, 23.976 and 12.5 fps: a 5 s segment has 5 x rate frames, each the one on screen."""
    count = int(6 * fps)
    source = make_clip(media / f"odd{float(fps):.3f}.mp4", Clip(frames=count, fps=fps))
    info = probe(source)
    assert info.duration is not None and info.fps is not None
    plan = plan_segments(info.duration, info.fps, length="5s")
    first = plan.segments[0]
    assert plan.rate == rate and first.frames == 5 * rate
    prepared = cut_segment(source, first, tmp_path / "cfr.mp4")
    times = [index / float(fps) for index in range(count)]
    assert read_indices(prepared.path) == on_screen(times, first.first, first.frames, rate)
    written = probe(prepared.path)
    assert written.fps == rate and not written.variable_frame_rate
    assert written.duration == pytest.approx(5.0)


def test_a_variable_frame_rate_clip_becomes_constant(media: Path, tmp_path: Path) -> None:
    """Frames 1/20 s and 1/40 s apart: probed as variable, prepared at a constant rate."""
    times = [0.0]
    while len(times) < 240:
        times.append(times[-1] + (0.05 if len(times) % 3 else 0.025))
    source = make_clip(media / "vfr.mp4", Clip(frames=len(times), times=times))
    info = probe(source)
    assert info.variable_frame_rate and info.fps is not None and info.duration is not None
    plan = plan_segments(info.duration, info.fps, length="5s")
    first = plan.segments[0]
    prepared = cut_segment(source, first, tmp_path / "cfr.mp4")
    assert read_indices(prepared.path) == on_screen(times, first.first, first.frames, plan.rate)
    assert not probe(prepared.path).variable_frame_rate


def test_the_byte_limit_raises_the_rate_factor(media: Path, tmp_path: Path) -> None:
    """A grainy segment over the limit at CRF 17 is encoded again, coarser, until it fits."""
    source = make_clip(media / "grain.mp4", Clip(frames=130, noise=40))
    free = cut_segment(source, segment(0, 120), tmp_path / "free.mp4")
    limit = free.size // 3
    fitted = cut_segment(source, segment(0, 120), tmp_path / "fit.mp4", max_bytes=limit)
    assert fitted.size <= limit and fitted.path.stat().st_size == fitted.size
    assert fitted.crf is not None and fitted.crf > 17
    assert read_indices(fitted.path) == list(range(120))
    with pytest.raises(MediaError, match="over the limit of 1000") as caught:
        cut_segment(source, segment(0, 120), tmp_path / "never.mp4", max_bytes=1000)
    assert caught.value.path == source


def test_a_prores_source_goes_out_as_h264(media: Path, tmp_path: Path) -> None:
    """ProRes 4:2:2 10-bit in a MOV is never sent as it is: H.264 yuv420p MP4."""
    source = make_clip(
        media / "master.mov",
        Clip(frames=130, codec="prores_ks", pix_fmt="yuv422p10le", container_format="mov"),
    )
    assert probe(source).codec == "prores"
    info = cut_segment(source, segment(0, 120), tmp_path / "prores.mp4", max_height=1080)
    written = probe(info.path)
    assert (written.codec, written.pixel_format, written.container.split(",")[0]) == (
        "h264",
        "yuv420p",
        "mov",
    )
    assert info.size < source.stat().st_size
    assert read_indices(info.path) == list(range(120))


def test_a_source_ending_before_the_segment_is_refused(gop_clip: Path, tmp_path: Path) -> None:
    """Asking for frames past the clip's end names the clip and where its video ends."""
    with pytest.raises(MediaError, match=r"ends at 19\.96 s, before 25\.00 s") as caught:
        cut_segment(gop_clip, segment(480, 120), tmp_path / "past.mp4")
    assert caught.value.path == gop_clip


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_is_a_disk_error_naming_the_output(gop_clip: Path) -> None:
    """Writing into a full disk stops the run (DiskError), it is not the source's fault."""
    with pytest.raises(DiskError, match="/dev/full: No space left on device"):
        cut_segment(gop_clip, segment(121, 120), Path("/dev/full"))


def test_unreadable_sources_are_media_errors(tmp_path: Path) -> None:
    """A missing file and a text file renamed .mp4 fail as MediaError naming them."""
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 20)
    for path in (tmp_path / "missing.mp4", text):
        with pytest.raises(MediaError) as caught:
            cut_segment(path, segment(0, 120), tmp_path / "out.mp4")
        assert caught.value.path == path and str(path) in str(caught.value)


def test_frames_come_out_in_order_without_holes(gop_clip: Path, tmp_path: Path) -> None:
    """Every written frame's time is its index over the rate (a constant-rate file)."""
    info = cut_segment(gop_clip, segment(50, 120), tmp_path / "times.mp4")
    frames = list(decoded(info.path))
    assert [round(time * 24) for time, _ in frames] == list(range(120))
    assert read_index(frames[0][1]) == 50


@pytest.mark.parametrize(
    ("cores", "size", "threads"),
    [
        (64, (1920, 1080), 4),
        (64, (3840, 2160), 2),
        (64, (320, 180), 16),
        (2, (1920, 1080), 2),
        (1, (3840, 2160), 1),
    ],
)
def test_decoder_threads_follow_the_picture_not_the_machine(
    monkeypatch: pytest.MonkeyPatch, cores: int, size: tuple[int, int], threads: int
) -> None:
    """Frame threads each hold their own pictures: 4 at 1080p, 2 at 4K, never over the cores."""
    # No 64-core machine here: the usable cores are what sched_getaffinity answers.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert decode_threads(*size) == threads


def test_a_source_decodes_with_the_bounded_thread_count(gop_clip: Path) -> None:
    """The decoder runs with ``decode_threads`` frame threads, and every frame comes out."""
    with VideoSource(gop_clip) as source:
        frames = sum(1 for _ in source.frames())
        context = source.stream.codec_context
        assert context.thread_count == decode_threads(source.stream.width, source.stream.height)
    assert frames == 480
