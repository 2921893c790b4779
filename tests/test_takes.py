"""Takes and looks in the plan: ``takes: N``, ``{take}``, ``gate: looks``, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.job import job_key
from runner.manifest import plan

from .test_manifest import HEAD, V2V, problems_of, write

EDIT = "luma/agent/uni-1/v1/edit"


def test_takes_make_independent_jobs_and_take_one_keeps_its_key(tmp_path: Path) -> None:
    """takes: 3 makes three jobs per input with distinct keys; take 1's key and path are
    what a manifest without takes: gives, so existing states keep their jobs."""
    before = plan(write(tmp_path, HEAD + 'output: "{clip}/{prompt}.mp4"\n'))
    after = plan(write(tmp_path, HEAD + 'output: "{clip}/{prompt}.mp4"\ntakes: 3\n'))
    first = before.jobs[0]
    assert [s.take for s in after.jobs] == [1, 2, 3]
    assert after.jobs[0].key == first.key
    assert after.jobs[0].output == first.output == "city/noir.mp4"
    assert len(set(after.keys)) == 3
    for spec in after.jobs:
        assert spec.arguments == first.arguments, "the take is never sent"
        assert spec.key == job_key(V2V, spec.arguments, spec.take)
    # A template without {take}: take N is named -takeN before the extension.
    assert [s.output for s in after.jobs[1:]] == ["city/noir-take2.mp4", "city/noir-take3.mp4"]
    assert [s.label for s in after.jobs] == ["city/noir", "city/noir[take=2]", "city/noir[take=3]"]


def test_take_template_variable_and_overrides(tmp_path: Path) -> None:
    """{take} names the take; a clip's takes: beats the manifest's, a job entry's beats both."""
    path = write(
        tmp_path,
        """\
        name: t
        endpoint: luma/agent/ray/v3.2/video-to-video
        output: "{clip}/{prompt}/take{take}.mp4"
        takes: 2
        prompts: {noir: "film noir", sepia: "sepia"}
        clips:
          - media/city.mp4
          - {path: media/beach.mp4, takes: 1}
        jobs:
          - {clip: city, prompt: noir, takes: 4, output: "x/{take}.mp4",
             input: {edit_strength: flex_1}}
        """,
    )
    jobs = plan(path).jobs
    outputs = [(s.clip, s.prompt, s.take, s.output) for s in jobs]
    assert outputs[:4] == [
        ("city", "noir", 1, "city/noir/take1.mp4"),
        ("city", "noir", 2, "city/noir/take2.mp4"),
        ("city", "sepia", 1, "city/sepia/take1.mp4"),
        ("city", "sepia", 2, "city/sepia/take2.mp4"),
    ]
    assert [s.take for s in jobs if s.clip == "beach"] == [1, 1]
    entry = [s for s in jobs if s.arguments.get("edit_strength") == "flex_1"]
    assert [s.take for s in entry] == [1, 2, 3, 4]


def test_takes_are_priced_and_counted(tmp_path: Path) -> None:
    """plan prices every take: three takes cost three times one."""
    one = plan(write(tmp_path, HEAD))
    three = plan(write(tmp_path, HEAD + "takes: 3\n"))
    assert len(three) == 3 * len(one)
    cost_one = sum(s.estimated_cost or 0 for s in one.jobs)
    assert sum(s.estimated_cost or 0 for s in three.jobs) == pytest.approx(3 * cost_one)


def test_takes_out_of_range_are_refused(tmp_path: Path) -> None:
    """takes: 0 or more than 100 is an error naming the line and field."""
    for value in ("0", "101", "two"):
        problems = problems_of(write(tmp_path, HEAD + f"takes: {value}\n"))
        assert [p.field for p in problems] == ["takes"]
        assert problems[0].line == 6


def test_extra_takes_from_rerolls_extend_one_group(tmp_path: Path) -> None:
    """A reroll's extra take (a take group's highest take) adds takes to that group only."""
    path = write(tmp_path, HEAD.replace('{noir: "film noir"}', '{noir: "noir", warm: "warm"}'))
    jobs = plan(path, extra_takes={"city/noir": 3}).jobs
    assert [(s.prompt, s.take) for s in jobs] == [
        ("noir", 1),
        ("noir", 2),
        ("noir", 3),
        ("warm", 1),
    ]


GATED = HEAD + 'output: "{clip}/{prompt}.mp4"\ngate: looks\ntakes: 2\n'


def test_gate_looks_makes_frame_look_render_chains(tmp_path: Path) -> None:
    """gate: looks: one first-frame step per clip, a Uni-1 look per prompt × take from it,
    and each render takes its look as start_image_url and waits for its approval."""
    jobs = plan(write(tmp_path, GATED)).jobs
    kinds = [(s.endpoint, s.take, s.role) for s in jobs]
    assert kinds == [
        ("local/frame", 1, None),
        (EDIT, 1, "look"),
        (V2V, 1, None),
        (EDIT, 2, "look"),
        (V2V, 2, None),
    ]
    frame, look1, render1, look2, render2 = jobs
    assert frame.parents == () and frame.kind == "local"
    assert frame.arguments["video_url"] == render1.arguments["video_url"]
    assert look1.parents == look2.parents == (frame.key,)
    assert look1.arguments["image_url"] == f"@job:{frame.key}"
    assert look1.arguments["prompt"] == "film noir"
    assert look1.estimated_cost == pytest.approx(0.045)
    for look, render in ((look1, render1), (look2, render2)):
        assert render.parents == render.gates == (look.key,)
        assert render.arguments["start_image_url"] == f"@job:{look.key}"
    assert look1.key != look2.key and render1.key != render2.key
    assert [look1.output, look2.output] == ["looks/city/noir.png", "looks/city/noir-take2.png"]
    assert [render1.output, render2.output] == ["city/noir.mp4", "city/noir-take2.mp4"]
    assert look2.label == "city/noir[take=2] (look)"


def test_a_look_is_shared_by_the_matrix_variants(tmp_path: Path) -> None:
    """Every matrix variant of a clip × prompt × take waits for the same look."""
    text = GATED.replace("takes: 2\n", "") + "matrix: {edit_strength: [flex_1, adhere_1]}\n"
    text = text.replace('"{clip}/{prompt}.mp4"', '"{clip}/{prompt}-{edit_strength}.mp4"')
    jobs = plan(write(tmp_path, text)).jobs
    looks = [s for s in jobs if s.role == "look"]
    renders = [s for s in jobs if s.endpoint == V2V]
    assert len(looks) == 1 and len(renders) == 2
    assert all(r.gates == (looks[0].key,) for r in renders)


def test_gate_looks_refusals(tmp_path: Path) -> None:
    """gate: looks on a job that is no clip render, over a URL clip, or beside a
    start_image_url of one's own is refused with its line and field."""
    url = HEAD.replace(
        "  - media/city.mp4\n", "  - {url: 'https://example.com/c.mp4', gate: looks}\n"
    )
    problems = problems_of(write(tmp_path, url))
    assert [(p.line, p.field) for p in problems] == [(5, "clips[0].gate")]
    assert "local clip" in problems[0].message

    own = GATED + "defaults: {start_image_url: 'https://example.com/s.png'}\n"
    problems = problems_of(write(tmp_path, own))
    assert [p.field for p in problems] == ["defaults.start_image_url"]

    text = """\
    name: t
    endpoint: luma/agent/uni-1/v1/text-to-image
    gate: looks
    prompts: {cat: "a cat"}
    """
    problems = problems_of(write(tmp_path, text))
    assert [(p.line, p.field) for p in problems] == [(3, "gate")]


def test_selections_name_takes(tmp_path: Path) -> None:
    """--only take=2 keeps the second takes (their looks too, and the clip's first frame
    they need); a prompt and a take select across fields."""
    path = write(tmp_path, GATED.replace('{noir: "film noir"}', '{noir: "noir", warm: "warm"}'))
    second = plan(path, only=["take=2"]).jobs
    assert {(s.prompt, s.take, s.role) for s in second} == {
        ("noir", 2, "look"),
        ("noir", 2, None),
        ("warm", 2, "look"),
        ("warm", 2, None),
        (None, 1, None),  # the first frame, shared by every take
    }
    one = plan(path, only=["take=1", "prompt=warm"]).jobs
    assert {(s.prompt, s.take) for s in one} == {("warm", 1), (None, 1)}
