"""plan_segments: exact render lengths, overlaps, the cheapest cover, shot mode, short sources."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from runner.media import RenderLength, Segment, SegmentPlan, plan_segments, planning_rate

LENGTHS: tuple[RenderLength, ...] = ("5s", "10s", "auto")


def per_second(seconds: int) -> float:
    """fal's v2v pricing shape: 5 s and 10 s cost the same per second (540p: $0.144/s)."""
    return 0.144 * seconds


def spans(plan: SegmentPlan) -> list[tuple[int, int]]:
    """Each segment's rendered frames as (first, end)."""
    return [(segment.first, segment.end) for segment in plan.segments]


def keeps(plan: SegmentPlan) -> list[tuple[int, int]]:
    """Each segment's kept frames as (first, end)."""
    return [(segment.keep_first, segment.keep_end) for segment in plan.segments]


def check_invariants(plan: SegmentPlan) -> None:
    """What every plan promises: exact renders inside the source, kept frames partitioned."""
    assert plan.segments
    position = 0
    for previous, segment in zip((None, *plan.segments), plan.segments, strict=False):
        assert isinstance(segment, Segment)
        assert segment.keep_first == position, "each source frame is kept exactly once"
        assert segment.first == segment.keep_first < segment.keep_end, "kept from its start"
        assert segment.keep_end <= segment.end <= plan.frames and segment.first >= 0
        if segment.billed_short:
            assert len(plan.segments) == 1 and segment.frames == plan.frames
        else:
            assert segment.frames == segment.seconds * plan.rate
            assert segment.seconds in (5, 10)
        if previous is not None and segment.blend_frames:
            assert previous.end >= segment.keep_first + segment.blend_frames, "both render it"
        position = segment.keep_end
    assert position == plan.frames


def test_27_seconds_at_10_seconds_pulls_the_last_segment_back() -> None:
    """27 s at 10 s: [0,10] [10,20] [17,27]; the second is kept up to 17 s, the last whole."""
    plan = plan_segments(27.0, 24, length="10s")
    check_invariants(plan)
    assert spans(plan) == [(0, 240), (240, 480), (408, 648)]
    assert keeps(plan) == [(0, 240), (240, 408), (408, 648)]
    assert [segment.duration for segment in plan.segments] == ["10s", "10s", "10s"]
    assert plan.seams == (10.0, 17.0)
    assert plan.rendered_seconds == 30 and plan.cost is None
    assert any("3.00 s more than asked" in note for note in plan.notes)


@pytest.mark.parametrize(
    ("seconds", "length", "expected"),
    [
        (5.0, "5s", [(0, 120)]),
        (10.0, "10s", [(0, 240)]),
        (10.0, "5s", [(0, 120), (120, 240)]),
        (10 + 1 / 24, "10s", [(0, 240), (1, 241)]),
        (10 + 1 / 24, "5s", [(0, 120), (120, 240), (121, 241)]),
        (5 + 1 / 24, "5s", [(0, 120), (1, 121)]),
    ],
)
def test_boundaries(seconds: float, length: RenderLength, expected: list[tuple[int, int]]) -> None:
    """Exactly 5 s, exactly 10 s and one frame more: exact renders, each frame kept once."""
    plan = plan_segments(seconds, 24, length=length)
    check_invariants(plan)
    assert spans(plan) == expected


def test_ten_second_renders_of_a_shorter_clip_fall_back_to_five() -> None:
    """A 7 s clip cannot fill a 10 s render: two 5 s renders, and the plan says why."""
    plan = plan_segments(7.0, 24, length="10s")
    check_invariants(plan)
    assert spans(plan) == [(0, 120), (48, 168)]
    assert any("shorter than 10s" in note for note in plan.notes)


def test_a_source_shorter_than_five_seconds_is_sent_whole_and_billed_as_five() -> None:
    """0.5 s: one segment of the 12 source frames, flagged as billed for 5 s."""
    plan = plan_segments(0.5, 24, length="10s", price=per_second)
    check_invariants(plan)
    [only] = plan.segments
    assert (only.first, only.frames, only.seconds, only.billed_short) == (0, 12, 5, True)
    assert plan.cost == pytest.approx(per_second(5))
    assert "billed as 5 s" in plan.notes[0]


def test_auto_with_equal_prices_prefers_fewer_segments() -> None:
    """With fal's equal per-second prices, ties go to fewer seams: 20 s is two 10 s renders."""
    plan = plan_segments(20.0, 24, length="auto", price=per_second)
    check_invariants(plan)
    assert [segment.seconds for segment in plan.segments] == [10, 10]
    one_frame_more = plan_segments(20 + 1 / 24, 24, length="auto", price=per_second)
    assert [segment.seconds for segment in one_frame_more.segments] == [10, 10, 5]
    assert one_frame_more.cost == pytest.approx(per_second(25))


@pytest.mark.parametrize(
    ("five", "ten", "expected"),
    [
        (1.0, 3.0, [5] * 6),  # 10 s renders cost more per second: six 5 s renders for 27 s
        (1.0, 1.2, [10, 10, 10]),  # 10 s renders are cheap: three of them beat 10+10+5+5
        (1.0, 2.0, [10, 10, 10]),  # equal per second: 30 s either way, the fewest renders win
    ],
)
def test_auto_takes_the_cheapest_cover_under_the_given_prices(
    five: float, ten: float, expected: list[int]
) -> None:
    """The cover follows the price function passed in, not a constant."""
    prices = {5: five, 10: ten}
    plan = plan_segments(27.0, 24, length="auto", price=prices.__getitem__)
    check_invariants(plan)
    assert [segment.seconds for segment in plan.segments] == expected
    assert plan.cost == pytest.approx(sum(prices[s] for s in expected))


def test_auto_mixes_lengths_when_that_is_cheapest() -> None:
    """22 s with 10 s renders a little cheaper per second: 10 + 10 + 5 beats 5 x 5 and 3 x 10."""
    prices = {5: 1.0, 10: 1.9}
    plan = plan_segments(22.0, 24, length="auto", price=prices.__getitem__)
    check_invariants(plan)
    assert [segment.seconds for segment in plan.segments] == [10, 10, 5]
    assert plan.cost == pytest.approx(4.8)


def test_auto_needs_a_price_function() -> None:
    """Auto without prices is refused rather than guessed."""
    with pytest.raises(ValueError, match="price"):
        plan_segments(27.0, 24, length="auto")


def test_overlap_frames_are_rendered_twice_and_marked_for_a_blend() -> None:
    """With 12 overlap frames each segment's first 12 kept frames are rendered by both."""
    plan = plan_segments(27.0, 24, length="10s", overlap_frames=12)
    check_invariants(plan)
    assert spans(plan) == [(0, 240), (228, 468), (408, 648)]
    assert keeps(plan) == [(0, 228), (228, 408), (408, 648)]
    assert [segment.blend_frames for segment in plan.segments] == [0, 12, 12]
    with pytest.raises(ValueError, match="overlap_frames"):
        plan_segments(27.0, 24, length="10s", overlap_frames=60)


def test_shots_are_never_crossed_and_seams_fall_on_cuts() -> None:
    """Cuts at 12 s and 30 s: every segment lies inside one shot, seams on the cuts."""
    plan = plan_segments(40.0, 24, length="10s", cuts=[12.0, 30.0])
    check_invariants(plan)
    for segment in plan.segments:
        assert not segment.first < 12 * 24 < segment.end
        assert not segment.first < 30 * 24 < segment.end
    assert {12.0, 30.0} <= set(plan.seams)
    assert spans(plan) == [(0, 240), (48, 288), (288, 528), (480, 720), (720, 960)]


def test_a_short_shot_joins_its_shorter_neighbour() -> None:
    """A 1.5 s shot between a 12 s and a 16.5 s shot merges into the 12 s one (no refusal)."""
    plan = plan_segments(40.0, 24, length="auto", cuts=[12.0, 13.5, 30.0], price=per_second)
    check_invariants(plan)
    assert 12.0 not in plan.seams and {13.5, 30.0} <= set(plan.seams)
    assert any(
        "12.00 s–13.50 s is shorter than 5 s: joined with the previous" in n for n in plan.notes
    )
    for segment in plan.segments:
        assert not segment.first < round(13.5 * 24) < segment.end


def test_a_minimum_shot_length_above_five_seconds_merges_more() -> None:
    """min_segment_seconds=8 merges the 6 s first shot into the next one."""
    plan = plan_segments(30.0, 24, length="auto", cuts=[6.0], price=per_second)
    assert 6.0 in plan.seams
    merged = plan_segments(
        30.0, 24, length="auto", cuts=[6.0], min_segment_seconds=8, price=per_second
    )
    check_invariants(merged)
    assert 6.0 not in merged.seams and "joined with the next" in merged.notes[0]


@pytest.mark.parametrize(
    ("fps", "rate"), [(29.97, 30), (23.976, 24), (12.5, 13), (25.0, 25), (120.0, 60), (1.0, 1)]
)
def test_planning_rate_is_the_whole_rate_at_or_above_the_source(fps: float, rate: int) -> None:
    """Odd rates round up (no frame dropped), capped at 60 fps."""
    assert planning_rate(fps) == rate


def test_odd_rates_plan_whole_frames() -> None:
    """A 29.97 fps clip is planned at 30 fps: a 10 s render is exactly 300 frames."""
    plan = plan_segments(809 / 29.97, 29.97, length="10s")
    check_invariants(plan)
    assert plan.rate == 30 and {segment.frames for segment in plan.segments} == {300}


def test_nothing_to_render_is_refused() -> None:
    """A clip of no frames, or a zero frame rate, is a ValueError."""
    with pytest.raises(ValueError):
        plan_segments(0.0, 24, length="5s")
    with pytest.raises(ValueError):
        plan_segments(3.0, 0, length="5s")


@settings(max_examples=300, deadline=None)
@given(
    seconds=st.floats(0.05, 200.0),
    fps=st.sampled_from([12.5, 23.976, 24.0, 25.0, 29.97, 50.0, 60.0]),
    length=st.sampled_from(LENGTHS),
    overlap=st.integers(0, 30),
    cut_points=st.lists(st.floats(0.0, 1.0), max_size=8),
)
def test_every_plan_keeps_its_promises(
    seconds: float, fps: float, length: RenderLength, overlap: int, cut_points: list[float]
) -> None:
    """Any clip, rate, length, overlap and cuts: exact renders, a partition, no waste."""
    cuts = [point * seconds for point in cut_points]
    plan = plan_segments(
        seconds,
        fps,
        length=length,
        cuts=cuts,
        overlap_frames=overlap,
        price=per_second,
    )
    check_invariants(plan)
    # Nothing is rendered for nothing: every segment keeps at least one frame of its own.
    assert all(segment.keep_end > segment.keep_first for segment in plan.segments)
    if length == "auto" and not cuts:
        for fixed in LENGTHS[:2]:
            other = plan_segments(
                seconds, fps, length=fixed, overlap_frames=overlap, price=per_second
            )
            assert plan.cost is not None and other.cost is not None
            assert plan.cost <= other.cost + 1e-9
