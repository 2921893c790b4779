"""Planning long clips: which clips are cut, the graph each continuity makes, prices from
the price table, shared jobs placed once, selections, and what is refused at plan time.

Planning runs in-process on small generated clips; ``plan`` and the refusals' exit code
go through the real CLI.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from fractions import Fraction
from pathlib import Path
from textwrap import dedent

import av
import numpy as np
import pytest

from runner.endpoints import DEFAULT_PRICES, EDIT_IMAGE, VIDEO_TO_VIDEO
from runner.errors import ManifestError
from runner.job import JobSpec, job_key, split_parent_ref
from runner.manifest import plan
from runner.plan import Plan
from tests.conftest import MANIFESTS, run_cli
from tests.media_sources import Clip, make_clip

CUT, FRAME, STITCH = "local/cut", "local/frame", "local/stitch"


def shots(path: Path, seconds: int, cuts: list[int], rate: int = 24) -> Path:
    """A clip whose shots change at each of ``cuts`` (seconds): warm and cold gradients in
    turn."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        ramp = np.linspace(0, 255, 160, dtype=np.float32)[None, :, None]
        for index in range(seconds * rate):
            warm = sum(index >= cut * rate for cut in cuts) % 2 == 0
            base = np.array((230, 120, 40) if warm else (30, 90, 220), np.float32)
            moving = (ramp + index) % 256 * 0.3
            image = np.broadcast_to(base * 0.7 + moving, (96, 160, 3)).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated clips: 27 s with sound, 27 s with a shot change at 12 s, 27 s with a 2 s
    shot at 12 s, 3 s, 10 s."""
    folder = tmp_path_factory.mktemp("long-media")
    make_clip(folder / "talk.mp4", Clip(frames=648, clicks=[1.0, 13.0], audio_codec="aac"))
    shots(folder / "shots.mp4", 27, [12])
    shots(folder / "brief.mp4", 27, [12, 14])
    make_clip(folder / "short.mp4", Clip(frames=72))
    make_clip(folder / "ten.mp4", Clip(frames=240))
    return folder


def manifest(
    tmp_path: Path, media: Path, body: str, *, clips: str = "[media/talk.mp4]", prompts: int = 2
) -> Path:
    """A video-to-video manifest over ``clips`` with ``prompts`` prompts, plus ``body``."""
    shutil.copytree(media, tmp_path / "media", dirs_exist_ok=True)
    lines = [
        "name: long-test",
        "endpoint: luma/agent/ray/v3.2/video-to-video",
        'output: "{clip}/{prompt}.mp4"',
        "defaults: {resolution: 540p}",
        f"clips: {clips}",
        "prompts:",
        *(f'  p{i}: "look number {i}"' for i in range(prompts)),
    ]
    path = tmp_path / "m.yaml"
    path.write_text("\n".join(lines) + "\n" + dedent(body))
    return path


def by_endpoint(result: Plan) -> Counter[str]:
    """How many jobs of each endpoint the plan has."""
    return Counter(job.endpoint for job in result.jobs)


def parents_of(job: JobSpec, field: str) -> str | None:
    """The key of the parent job whose output ``field`` of ``job`` takes."""
    found = split_parent_ref(job.arguments.get(field) or "")
    return found[0] if found else None


def test_a_clip_that_fits_one_render_is_the_same_one_job_as_before(
    tmp_path: Path, media: Path
) -> None:
    """A 3 s clip (shorter than any render) and a 10 s clip with duration: 10s each stay one
    job whose key is the one raybatch always gave them: existing states keep their jobs;
    plan warns that fal bills the 3 s clip as 5 s."""
    path = manifest(tmp_path, media, "", clips="[media/short.mp4]", prompts=1)
    result = plan(path)
    assert set(by_endpoint(result)) == {VIDEO_TO_VIDEO}
    short = next(job for job in result.jobs if job.clip == "short")
    expected = {
        "prompt": "look number 0",
        "resolution": "540p",
        "duration": "5s",
        "hdr": False,
        "exr_export": False,
        "video_url": short.arguments["video_url"],
    }
    assert short.key == job_key(VIDEO_TO_VIDEO, expected)
    assert result.segmented == ()
    shown = run_cli("plan", path, "--output-dir", tmp_path / "out", cwd=tmp_path).stdout
    assert "! short (media/short.mp4): billed up: 3.0 s clip billed as 5s" in shown
    path.write_text(
        path.read_text()
        .replace("media/short.mp4", "media/ten.mp4")
        .replace("{resolution: 540p}", "{resolution: 540p, duration: 10s}")
    )
    [ten] = plan(path).jobs
    expected.update(duration="10s", video_url=ten.arguments["video_url"])
    assert ten.key == job_key(VIDEO_TO_VIDEO, expected)


def test_a_ten_second_clip_with_auto_length_is_one_ten_second_render(
    tmp_path: Path, media: Path
) -> None:
    """With no duration, a 10 s clip is one 10 s render (the whole clip, not its first 5 s)."""
    result = plan(manifest(tmp_path, media, "", clips="[media/ten.mp4]", prompts=1))
    [job] = result.jobs
    assert job.arguments["duration"] == "10s"
    assert job.estimated_cost == DEFAULT_PRICES.estimate(VIDEO_TO_VIDEO, job.arguments)


def test_anchor_makes_a_look_start_frames_and_parallel_renders(tmp_path: Path, media: Path) -> None:
    """27 s × 2 prompts, anchor: per clip 3 cuts and their frames; per prompt one look, a
    start frame per later segment (its own first frame, the look as reference), 3 renders
    from their start frames, a stitch with the source's sound. Shared jobs appear once."""
    result = plan(manifest(tmp_path, media, ""))
    assert by_endpoint(result) == {
        CUT: 3,
        FRAME: 1 + 2,  # the clip's first frame, then segments 1 and 2's
        EDIT_IMAGE: 2 * (1 + 2),
        VIDEO_TO_VIDEO: 2 * 3,
        STITCH: 2,
    }
    assert len(set(result.keys)) == len(result.keys)
    jobs = {job.key: job for job in result.jobs}
    for stitch in (job for job in result.jobs if job.endpoint == STITCH):
        renders = [jobs[split_parent_ref(p)[0]] for p in stitch.arguments["parts"]]  # type: ignore[index]
        assert [r.arguments["duration"] for r in renders] == ["10s"] * 3
        assert stitch.arguments["audio_url"].startswith("@local:")
        look = jobs[parents_of(renders[0], "start_image_url") or ""]
        assert look.labels["role"] == "look" and look.prompt == stitch.prompt
        assert jobs[parents_of(look, "image_url") or ""].arguments["at"] == "first"
        for render in renders[1:]:
            start = jobs[parents_of(render, "start_image_url") or ""]
            assert start.endpoint == EDIT_IMAGE and start.labels["role"] == "start"
            assert start.arguments["reference_image_urls"] == [f"@job:{look.key}"]
            frame = jobs[parents_of(start, "image_url") or ""]
            assert parents_of(frame, "video_url") == parents_of(render, "video_url")
    # Each job comes after the jobs it needs: the plan reads top-down.
    seen: set[str] = set()
    for job in result.jobs:
        assert set(job.parents) <= seen
        seen.add(job.key)


def test_gate_looks_holds_a_long_clips_paid_work_for_its_look(tmp_path: Path, media: Path) -> None:
    """gate: looks with a 27 s clip and a 3 s clip: per prompt one look each, shared with
    nothing else; every render and start frame of the long clip waits for its own look's
    approval, the short clip's render for its own, and nothing else waits."""
    clips = "[media/talk.mp4, media/short.mp4]"
    result = plan(manifest(tmp_path, media, "gate: looks\ntakes: 2\n", clips=clips))
    assert len(set(result.keys)) == len(result.keys)
    looks = {j.key: j for j in result.jobs if j.role == "look"}
    assert len(looks) == 2 * 2 * 2  # clip × prompt × take
    for job in result.jobs:
        paid_after_look = job.endpoint == VIDEO_TO_VIDEO or job.role == "start"
        if not paid_after_look:
            assert job.gates == (), job.label
            continue
        [gate] = job.gates
        look = looks[gate]
        assert (look.clip, look.prompt, look.take) == (job.clip, job.prompt, job.take)
    long_renders = [j for j in result.jobs if j.endpoint == VIDEO_TO_VIDEO and j.clip == "talk"]
    assert len(long_renders) == 2 * 2 * 3


def test_chain_renders_one_after_another_from_the_previous_render(
    tmp_path: Path, media: Path
) -> None:
    """chain: segment 0 starts from the look, each later one from a frame of the render
    before it (the last frame when the segments abut, the frame at its first moment when
    they overlap); no start-frame edits."""
    result = plan(manifest(tmp_path, media, "segments: {continuity: chain}\n", prompts=1))
    jobs = {job.key: job for job in result.jobs}
    renders = [job for job in result.jobs if job.endpoint == VIDEO_TO_VIDEO]
    assert by_endpoint(result)[EDIT_IMAGE] == 1  # the look only
    assert jobs[parents_of(renders[0], "start_image_url") or ""].labels["role"] == "look"
    ats = []
    for before, render in zip(renders, renders[1:], strict=False):
        frame = jobs[parents_of(render, "start_image_url") or ""]
        assert frame.endpoint == FRAME and parents_of(frame, "video_url") == before.key
        ats.append(frame.arguments["at"])
    # 27 s in 10 s renders: 0-10, 10-20, then 17-27 pulled back inside the one before.
    assert ats == ["last", 7.0]


def test_none_renders_independently_and_shots_put_seams_on_cuts(
    tmp_path: Path, media: Path
) -> None:
    """continuity none: no look, no start image; cut: shots: no segment crosses the shot
    change at 12 s, and plan says where it found it."""
    body = "segments: {continuity: none, cut: shots}\n"
    result = plan(manifest(tmp_path, media, body, clips="[media/shots.mp4]", prompts=1))
    assert EDIT_IMAGE not in by_endpoint(result)
    renders = [job for job in result.jobs if job.endpoint == VIDEO_TO_VIDEO]
    assert all("start_image_url" not in job.arguments for job in renders)
    [clip] = result.segmented
    for start, end, _seconds in clip.spans:
        assert not start < 12.0 < end
    assert 12.0 in clip.seams
    assert any(note.startswith("shot changes at 12.00 s") for note in clip.notes)


def test_a_shot_shorter_than_a_render_joins_its_neighbour(tmp_path: Path, media: Path) -> None:
    """A 2 s shot between cuts at 12 s and 14 s is merged into a neighbour, not refused:
    plan says so, and no seam falls inside the merged span."""
    body = "segments: {cut: shots}\n"
    result = plan(manifest(tmp_path, media, body, clips="[media/brief.mp4]", prompts=1))
    [clip] = result.segmented
    merged = [note for note in clip.notes if "is shorter than 5 s: joined with" in note]
    assert merged and "12.00 s–14.00 s" in merged[0], clip.notes
    assert not any(12.0 < seam < 14.0 for seam in clip.seams)


def test_plan_prices_every_job_from_the_price_table(tmp_path: Path, media: Path) -> None:
    """Renders cost the table's 540p cell for their length, the look and start frames the
    Uni-1 edit row plus its per-image row, local steps nothing; plan --json adds up."""
    path = manifest(tmp_path, media, "")
    result = plan(path)
    for job in result.jobs:
        if job.kind == "local":
            assert job.estimated_cost == 0.0
        else:
            assert job.estimated_cost == DEFAULT_PRICES.estimate(job.endpoint, job.arguments)
    edits = sorted(j.estimated_cost or 0 for j in result.jobs if j.endpoint == EDIT_IMAGE)
    assert edits == pytest.approx([0.045] * 2 + [0.048] * 4)  # 0.042 + 0.003 per image
    shown = run_cli("plan", path, "--json", "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["total"]["estimated_cost"] == pytest.approx(2 * (3 * 1.44 + 0.045 + 0.096))
    [clip] = summary["segmented"]
    assert clip["spans"] == [[0.0, 10.0, 10], [10.0, 20.0, 10], [17.0, 27.0, 10]]
    assert clip["seams"] == [10.0, 17.0]
    assert (clip["renders_usd"], clip["looks_usd"], clip["outputs"]) == (4.32, 0.141, 2)
    text = run_cli("plan", path, "--output-dir", tmp_path / "out", cwd=tmp_path).stdout
    assert "talk  media/talk.mp4  27.00 s at 24 fps: 3 renders (10s+10s+10s)" in text
    assert "seams at 10.00, 17.00 s" in text


def test_a_clips_own_settings_win_and_an_overlap_is_blended(tmp_path: Path, media: Path) -> None:
    """A clip's own segments: block wins over the manifest's, field by field; an overlap is
    rendered by both segments at each seam and blended in the stitch."""
    clips = "[{path: media/talk.mp4, segments: {length: 10s, overlap: 12}}]"
    body = "segments: {length: 5s, continuity: none}\n"
    result = plan(manifest(tmp_path, media, body, clips=clips, prompts=1))
    stitch = next(job for job in result.jobs if job.endpoint == STITCH)
    rows = stitch.arguments["segments"]
    assert stitch.arguments["blend"] is True
    assert EDIT_IMAGE not in by_endpoint(result)  # the manifest's continuity: none holds
    assert [row[4] for row in rows] == [10] * len(rows)
    assert [row[7] for row in rows] == [0, 12, 12]
    assert rows[1][2] == rows[0][2] + rows[0][3] - 12  # starts 12 frames before the end


def test_a_duration_in_the_input_sets_the_length(tmp_path: Path, media: Path) -> None:
    """With length auto, duration: 5s in the input makes 5 s renders."""
    path = manifest(tmp_path, media, "", prompts=1)
    path.write_text(
        path.read_text().replace("{resolution: 540p}", "{resolution: 540p, duration: 5s}")
    )
    renders = [job for job in plan(path).jobs if job.endpoint == VIDEO_TO_VIDEO]
    assert [job.arguments["duration"] for job in renders] == ["5s"] * 6


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            "segments: {length: 10s}\njobs: [{clip: talk, prompt: p0, input: {duration: 5s}}]\n",
            "segments.length",
            "length 10s disagrees with duration 5s in jobs[0].input; remove one",
        ),
        (
            "defaults: {start_image_url: 'https://example.com/a.png'}\n",
            "segments.continuity",
            "continuity anchor gives every segment its own start_image_url",
        ),
        ("segments: {max_source: 20s}\n", "clips[0]", "27 s long, over the longest clip"),
        ("segments: {overlap: 70}\n", "segments.overlap", "overlap_frames must be between"),
    ],
)
def test_contradictory_settings_are_refused_with_their_place(
    tmp_path: Path, media: Path, body: str, field: str, message: str
) -> None:
    """Settings that cannot both hold, or a clip over the cap, name file, line and field."""
    path = manifest(tmp_path, media, body, prompts=1)
    if body.startswith("defaults"):
        text = path.read_text().replace("defaults: {resolution: 540p}\n", "")
        path.write_text(text)
    with pytest.raises(ManifestError) as caught:
        plan(path)
    problems = caught.value.problems
    assert any(p.field == field and message in p.message and p.line for p in problems), problems


def test_a_selection_keeps_the_jobs_it_needs(tmp_path: Path, media: Path) -> None:
    """--only p1 keeps p1's jobs and the clip's cuts and frames they need, not p0's."""
    path = manifest(tmp_path, media, "")
    whole = plan(path)
    picked = whole.selected(["p1"], [])
    assert {job.prompt for job in picked.jobs} == {"p1", None}
    keys = set(picked.keys)
    for job in picked.jobs:
        assert set(job.parents) <= keys, job.label
    assert by_endpoint(picked)[CUT] == 3 and by_endpoint(picked)[STITCH] == 1


@pytest.mark.parametrize("what", ["audio-only", "undecodable", "no frames"])
def test_unusable_clips_are_refused_at_plan_time(tmp_path: Path, what: str) -> None:
    """A file with sound but no picture, one that is not media, and one with a video
    stream holding no frame: exit 2 naming file, line and field; nothing is submitted."""
    folder = tmp_path / "media"
    folder.mkdir()
    bad = folder / "bad.mp4"
    if what == "undecodable":
        bad.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40)
    elif what == "no frames":
        with av.open(str(bad), "w") as out:  # a video stream, and sound so it is written
            video = out.add_stream("libx264", rate=24)
            video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
            sound = out.add_stream("aac", rate=48000, layout="mono")
            silence = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            silence.sample_rate, silence.pts = 48000, 0
            for packet in [*sound.encode(silence), *sound.encode(None)]:
                out.mux(packet)
    else:
        make_clip(folder / "talk.mp4", Clip(frames=24, clicks=[0.5], audio_codec="aac"))
        # A sound-only file: the clip's audio stream alone.
        with av.open(str(folder / "talk.mp4")) as src, av.open(str(bad), "w") as out:
            stream = out.add_stream_from_template(src.streams.audio[0])
            for packet in src.demux(src.streams.audio[0]):
                if packet.size:
                    packet.stream = stream
                    out.mux(packet)
    path = tmp_path / "m.yaml"
    path.write_text(
        "name: bad\nendpoint: luma/agent/ray/v3.2/video-to-video\n"
        'prompts: {p: "x"}\nclips:\n  - media/bad.mp4\n'
    )
    done = run_cli("plan", path, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.startswith(f"raybatch: {path}:5: clips[0]: media/bad.mp4")
    assert "Traceback" not in done.stderr
    if what == "audio-only":
        assert "sound only, with no video stream" in done.stderr


def test_the_example_manifest_plans_its_two_long_clips() -> None:
    """manifests/long.yaml: harbour (27 s, sound) in 3 anchored renders, valley (95 s) in
    10 chained renders with seams on its four shot changes."""
    result = plan(MANIFESTS / "long.yaml")
    clips = {clip.clip: clip for clip in result.segmented}
    assert clips["harbour"].seams == (10.0, 17.0)
    assert {20.0, 40.0, 60.0, 80.0} <= set(clips["valley"].seams)
    assert len(clips["valley"].spans) == 10
    assert "audio source" in clips["harbour"].settings
    assert "continuity chain" in clips["valley"].settings
    assert Fraction(clips["valley"].rate) == 25
