"""stitch: frame-exact joins, duration and sound in sync within one frame, trims and blends.

The "renders" are made here the way Ray 3.2 returns them (24 fps, exactly the segment's
length, silent), each frame showing the source frame it stands for, so a test can tell
which source frame ended up where.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import pytest

from runner.media import MediaError, Segment, SegmentPlan, plan_segments, probe, stitch
from tests.media_sources import (
    Clip,
    Colour,
    click_times,
    decoded,
    make_clip,
    read_indices,
)

CLICKS = [0.5, 9.75, 10.0, 17.5, 20.25, 26.5]
RENDER_FPS = 24


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory for this module's generated sources and renders."""
    return tmp_path_factory.mktemp("stitch")


def render(
    path: Path,
    segment: Segment,
    source_fps: Fraction,
    band: Colour = (200, 60, 30),
    options: dict[str, str] | None = None,
) -> Path:
    """A fake Ray render of ``segment``: 24 fps, silent, frame j shows the source frame then."""

    def shows(index: int) -> int:
        moment = segment.at(segment.first) + Fraction(index, RENDER_FPS)
        return int(moment * source_fps + Fraction(1, 10**6))

    frames = segment.seconds * RENDER_FPS
    clip = Clip(frames=frames, shows=shows, colour=lambda _: band, options=options or {})
    return make_clip(path, clip)


def renders(
    media: Path,
    name: str,
    plan: SegmentPlan,
    fps: Fraction,
    options: dict[str, str] | None = None,
) -> list[tuple[Path, Segment]]:
    """One fake render per segment of ``plan``."""
    return [
        (render(media / f"{name}-{segment.index}.mp4", segment, fps, options=options), segment)
        for segment in plan.segments
    ]


def clicks_match(path: Path, expected: list[float], duration: float) -> None:
    """Every click of the source inside ``duration`` is heard within one frame of its time."""
    heard = click_times(path)
    wanted = [time for time in expected if time < duration]
    assert len(heard) == len(wanted)
    for got, want in zip(heard, wanted, strict=True):
        assert got == pytest.approx(want, abs=1 / RENDER_FPS)


@pytest.fixture(scope="module")
def source_30s(media: Path) -> Path:
    """30 s at 24 fps with AAC clicks."""
    clip = Clip(frames=720, clicks=CLICKS, audio_codec="aac")
    return make_clip(media / "src30.mp4", clip)


@pytest.fixture(scope="module")
def source_27s(media: Path) -> Path:
    """27 s at 24 fps with clicks in 16-bit PCM, in a MOV (PCM cannot go in an MP4)."""
    clip = Clip(frames=648, clicks=CLICKS, audio_codec="pcm_s16le", container_format="mov")
    return make_clip(media / "src27.mov", clip)


def video_packets(path: Path) -> list[bytes]:
    """Every video packet of ``path`` in decode order."""
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def test_exact_parts_are_joined_without_re_encoding(
    media: Path, source_30s: Path, tmp_path: Path
) -> None:
    """30 s from three 10 s renders: packets copied in order, every frame, clicks in sync."""
    plan = plan_segments(30.0, 24, length="10s")
    parts = renders(media, "exact", plan, Fraction(24))
    info = stitch(parts, tmp_path / "out.mp4", audio_from=source_30s)
    assert not info.reencoded and info.audio == "copied"
    assert video_packets(info.path) == [b for path, _ in parts for b in video_packets(path)]
    assert read_indices(info.path) == list(range(720))
    written = probe(info.path)
    assert written.duration == pytest.approx(30.0, abs=1 / 24) and info.frames == 720
    clicks_match(info.path, CLICKS, 30.0)


def test_an_overlapping_last_segment_is_trimmed(
    media: Path, source_27s: Path, tmp_path: Path
) -> None:
    """27 s from [0,10] [10,20] [17,27]: each source frame once, in order; PCM sound as AAC."""
    plan = plan_segments(27.0, 24, length="10s")
    info = stitch(
        renders(media, "trim", plan, Fraction(24)), tmp_path / "out.mp4", audio_from=source_27s
    )
    assert info.reencoded and info.audio == "aac"
    assert read_indices(info.path) == list(range(648))
    written = probe(info.path)
    assert written.audio_codec == "aac"
    assert written.duration == pytest.approx(27.0, abs=1 / 24)
    clicks_match(info.path, CLICKS, 27.0)


def test_a_tail_cut_of_renders_without_reordered_frames_is_copied(
    media: Path, source_30s: Path, tmp_path: Path
) -> None:
    """27 s from renders without reordered frames: the second is cut short, nothing re-encoded."""
    plan = plan_segments(27.0, 24, length="10s")
    parts = renders(media, "noreorder", plan, Fraction(24), {"bf": "0"})
    info = stitch(parts, tmp_path / "out.mp4", audio_from=source_30s)
    assert not info.reencoded
    kept = [video_packets(path)[: s.keep_end - s.keep_first] for path, s in parts]
    assert video_packets(info.path) == [packet for part in kept for packet in part]
    assert read_indices(info.path) == list(range(648))
    clicks_match(info.path, CLICKS, 27.0)


def test_a_tail_cut_inside_a_b_frame_group_is_re_encoded(media: Path, tmp_path: Path) -> None:
    """A cut that would drop a frame a kept B-frame needs: re-encoded, still frame-exact."""
    plan = plan_segments(26.25, 24, length="10s")
    assert (plan.segments[1].keep_end - plan.segments[1].keep_first) % 4 == 2
    parts = renders(media, "bframes", plan, Fraction(24), {"bf": "3", "x264-params": "b-adapt=0"})
    info = stitch(parts, tmp_path / "out.mp4")
    assert info.reencoded
    assert read_indices(info.path) == list(range(630))


def test_overlaps_are_blended_linearly(media: Path, tmp_path: Path) -> None:
    """With 12 overlap frames, the band fades from one render's colour into the next's."""
    plan = plan_segments(19.5, 24, length="10s", overlap_frames=12)
    assert len(plan.segments) == 2  # two 10 s renders overlapping by 0.5 s
    dark, light = (20, 20, 20), (235, 235, 235)
    parts = [
        (render(media / f"blend-{s.index}.mp4", s, Fraction(24), (dark, light)[s.index % 2]), s)
        for s in plan.segments
    ]
    second = plan.segments[1]
    assert second.blend_frames == 12
    trimmed = stitch(parts, tmp_path / "trim.mp4")
    blended = stitch(parts, tmp_path / "blend.mp4", blend_overlaps=True)
    assert read_indices(blended.path) == read_indices(trimmed.path) == list(range(468))
    band = [float(image[-8:, :].mean()) for _, image in decoded(blended.path)]
    plain = [float(image[-8:, :].mean()) for _, image in decoded(trimmed.path)]
    window = range(second.keep_first, second.keep_first + second.blend_frames)
    for index in window:
        weight = (index - window.start + 1) / 13
        assert band[index] == pytest.approx(20 + weight * 215, abs=6)
        assert plain[index] == pytest.approx(235, abs=6)
    assert band[: window.start] == pytest.approx(plain[: window.start], abs=1)
    assert band[window.stop :] == pytest.approx(plain[window.stop :], abs=1)
    fade = band[window.start - 1 : window.stop + 1]
    assert all(later > earlier for earlier, later in zip(fade, fade[1:], strict=False))


def test_a_source_at_another_rate_is_stitched_at_the_renders_rate(
    media: Path, tmp_path: Path
) -> None:
    """A 29.97 fps source, renders at 24 fps: output frame j shows the source at j/24 s."""
    fps = Fraction(30000, 1001)
    count = 809  # 26.99 s
    source = make_clip(
        media / "ntsc.mp4", Clip(frames=count, fps=fps, clicks=CLICKS, audio_codec="aac")
    )
    info = probe(source)
    assert info.duration is not None and info.fps is not None
    plan = plan_segments(info.duration, info.fps, length="10s")
    assert plan.rate == 30
    stitched = stitch(renders(media, "ntsc", plan, fps), tmp_path / "out.mp4", audio_from=source)
    indices = read_indices(stitched.path)
    assert len(indices) == stitched.frames == round(info.duration * 24)
    assert indices == [
        min(count - 1, int(Fraction(j, 24) * fps + Fraction(1, 10**6))) for j in range(len(indices))
    ]
    assert probe(stitched.path).duration == pytest.approx(info.duration, abs=1 / 24)
    clicks_match(stitched.path, CLICKS, info.duration)


@pytest.mark.parametrize("name", ["src30.mp4", "src27.mov"])
def test_a_stitch_from_a_later_segment_takes_the_sound_from_there(
    media: Path, source_30s: Path, source_27s: Path, tmp_path: Path, name: str
) -> None:
    """Segments from 10 s on: the video and the sound both start at 10 s, cut to the sample."""
    source = source_30s if name == "src30.mp4" else source_27s
    plan = plan_segments(27.0, 24, length="10s")
    later = renders(media, "later", plan, Fraction(24))[1:]
    info = stitch(later, tmp_path / "out.mp4", audio_from=source)
    assert read_indices(info.path) == list(range(240, 648))
    heard = click_times(info.path)
    wanted = [time - 10 for time in CLICKS if 10 <= time < 27]
    assert heard == pytest.approx(wanted, abs=1 / RENDER_FPS)
    assert info.audio == ("copied" if name == "src30.mp4" else "aac")


def test_the_first_moments_of_copied_sound_are_kept(media: Path, tmp_path: Path) -> None:
    """A click in the first moments of AAC sound is heard in the stitch at its time: the
    packet before the span (the encoder's priming packet) is copied with it, as the
    decoder needs it to decode the span's first frame."""
    clicks = [0.0, 4.0]
    source = make_clip(media / "src-head.mp4", Clip(frames=240, clicks=clicks, audio_codec="aac"))
    plan = plan_segments(10.0, 24, length="10s")
    info = stitch(renders(media, "head", plan, Fraction(24)), tmp_path / "o.mp4", audio_from=source)
    assert info.audio == "copied"
    assert click_times(info.path) == pytest.approx(clicks, abs=1 / RENDER_FPS)


def test_a_short_render_is_refused_naming_it(media: Path, tmp_path: Path) -> None:
    """A render with 4 s where 10 s were asked for stops the stitch with its name."""
    plan = plan_segments(20.0, 24, length="10s")
    parts = renders(media, "short", plan, Fraction(24))
    cut = make_clip(media / "cut-short.mp4", Clip(frames=96))
    with pytest.raises(MediaError, match="but segment 1 needs") as caught:
        stitch([parts[0], (cut, parts[1][1])], tmp_path / "out.mp4")
    assert caught.value.path == cut


def test_parts_must_follow_each_other() -> None:
    """Segments given out of order are a programming error, refused before any work."""
    plan = plan_segments(30.0, 24, length="10s")
    parts = [(Path("a.mp4"), plan.segments[0]), (Path("c.mp4"), plan.segments[2])]
    with pytest.raises(ValueError, match="does not follow"):
        stitch(parts, Path("out.mp4"))
    with pytest.raises(ValueError, match="nothing"):
        stitch([], Path("out.mp4"))


def test_a_silent_source_gives_a_silent_stitch(media: Path, tmp_path: Path) -> None:
    """audio_from a clip with no sound writes video only, and says so."""
    plan = plan_segments(10.0, 24, length="10s")
    silent = make_clip(media / "silent.mp4", Clip(frames=240))
    info = stitch(
        renders(media, "silent", plan, Fraction(24)), tmp_path / "o.mp4", audio_from=silent
    )
    assert info.audio is None and not probe(info.path).has_audio
