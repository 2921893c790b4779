"""Manifests: loading, expansion into jobs, job keys, and every error with file, line, field."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest

from runner.endpoints import EndpointSpec
from runner.errors import ManifestError, Problem
from runner.manifest import MAX_SHOWN_PROBLEMS, Manifest, manifest_schema, plan
from runner.manifest._models import load
from runner.report import plan_summary

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / "manifests" / "media"
FULL = ROOT / "tests" / "manifests" / "full.yaml"
V2V = "luma/agent/ray/v3.2/video-to-video"

# Lines 1-5 of most cases below: one prompt, one clip, the edit endpoint.
HEAD = """\
name: t
endpoint: luma/agent/ray/v3.2/video-to-video
prompts: {noir: "film noir"}
clips:
  - media/city.mp4
"""


def write(tmp_path: Path, text: str | bytes, name: str = "m.yaml") -> Path:
    """Write a manifest into tmp_path, with the demo media copied to tmp_path/media."""
    media = tmp_path / "media"
    if not media.exists():
        shutil.copytree(MEDIA, media)
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(dedent(text))
    return path


def problems_of(path: Path, **options: object) -> list[Problem]:
    """The problems ``plan`` raises for the manifest at ``path``, or the sources it left
    out that stop ``plan`` and ``run`` by default (their hint dropped)."""
    with pytest.raises(ManifestError) as caught:
        refusal = plan(path, **options).bad_source_error()  # type: ignore[arg-type]
        if refusal is not None:
            raise refusal
    assert all(problem.file == str(path) for problem in caught.value.problems)
    return [p for p in caught.value.problems if "nothing was submitted" not in p.message]


# ----------------------------------------------------------------------------- loading


def test_load_manifest_reads_structure() -> None:
    """Loading returns the validated model with shorthand clips spelled out."""
    manifest, _ = load(FULL)
    assert isinstance(manifest, Manifest)
    assert (manifest.name, manifest.concurrency, manifest.max_cost) == ("full", 8, 50.0)
    assert manifest.clips[0].path == "../../manifests/media/city.mp4"
    assert manifest.clips[3].url == "https://example.com/a.mp4"
    assert manifest.clips[3].input == {"aspect_ratio": "9:16"}  # unquoted, still a string
    assert manifest.prices[ "luma/agent/ray/v3.2/reframe"][0].usd == 0.5  # fmt: skip


def test_full_example_expands_every_feature() -> None:
    """Sources × prompts × matrix, per-source endpoints, jobs: entries, limits and prices."""
    result = plan(FULL)
    outputs = [str(job.output) for job in result.jobs]
    assert outputs[:4] == [
        "city/noir-adhere_1.mp4",
        "city/noir-flex_2.mp4",
        "city/sepia-adhere_1.mp4",
        "city/sepia-flex_2.mp4",
    ]
    # the reframe and image-to-video sources do not take edit_strength: no matrix for them
    assert "remote1/noir-none.mp4" in outputs and "portrait/sepia-none.mp4" in outputs
    assert outputs[-2:] == ["special/beach.mp4", "art/noir.png"]
    assert len(result.jobs) == 3 * 2 * 2 + 2 + 2 + 1 + 1
    by_output = {str(job.output): job for job in result.jobs}
    special = by_output["special/beach.mp4"]
    assert special.arguments["resolution"] == "720p"  # the clip's own input still applies
    assert special.estimated_cost == pytest.approx(3.24)
    assert by_output["remote1/noir-none.mp4"].estimated_cost == 0.5  # manifest price
    assert by_output["art/noir.png"].arguments == {
        "prompt": "high-contrast black and white film noir",
        "style": "auto",
        "enable_web_search": False,
    }
    assert result.output_dir == FULL.parent / "out" / "full"
    costs = plan_summary(result, None)["endpoints"]
    assert costs[V2V]["estimated_cost"] == pytest.approx(8 * 0.72 + 4 * 1.08 + 3.24)
    assert all(e["unpriced"] == 0 for e in costs.values())
    applied = {limit["name"]: limit for limit in result.limits_applied}
    # Local video-to-video clips longer than one render are cut into renders: the
    # longest-source limit (raised by the manifest) is measured against what is sent.
    assert applied["max_source_seconds"]["user"] is True
    assert applied["max_file_bytes"]["user"] is False
    assert applied["image_containers"]["source"].startswith("fal.ai/models/fal-ai/luma-dream")


def test_expansion_counts_and_order(tmp_path: Path) -> None:
    """3 clips × 2 prompts × (2 × 3 matrix values) = 36 jobs, clip-major, in manifest order."""
    path = write(
        tmp_path,
        """\
        name: t
        endpoint: luma/agent/ray/v3.2/video-to-video
        output: "{clip}/{prompt}/{resolution}-{edit_strength}.mp4"
        clips: ["media/city.mp4", "media/beach.mp4", "media/forest.mp4"]
        prompts: {noir: "film noir", sepia: "sepia"}
        matrix:
          resolution: [540p, 720p]
          edit_strength: [adhere_1, flex_1, reimagine_1]
        """,
    )
    jobs = plan(path).jobs
    assert len(jobs) == 36
    assert len({job.key for job in jobs}) == 36
    assert [job.clip for job in jobs[::12]] == ["city", "beach", "forest"]
    assert str(jobs[0].output) == "city/noir/540p-adhere_1.mp4"
    assert str(jobs[1].output) == "city/noir/540p-flex_1.mp4"
    assert str(jobs[6].output) == "city/sepia/540p-adhere_1.mp4"
    assert dict(jobs[1].labels) == {"resolution": "540p", "edit_strength": "flex_1"}
    assert {job.estimated_cost for job in jobs} == {0.72, 1.08}


def test_input_layers_override_in_order(tmp_path: Path) -> None:
    """defaults ← clip input ← matrix ← prompt: the most specific value wins."""
    path = write(
        tmp_path,
        """\
        name: t
        endpoint: luma/agent/ray/v3.2/video-to-video
        defaults: {resolution: 1080p, duration: 10s, edit_strength: flex_3, prompt: "overwritten"}
        clips:
          - {path: media/city.mp4, input: {resolution: 720p, edit_strength: adhere_1}}
        prompts: {noir: "film noir"}
        matrix: {edit_strength: [reimagine_2]}
        """,
    )
    [job] = plan(path).jobs
    assert job.arguments["resolution"] == "720p"
    assert job.arguments["duration"] == "10s"
    assert job.arguments["edit_strength"] == "reimagine_2"
    assert job.arguments["prompt"] == "film noir"


def test_template_variables_render(tmp_path: Path) -> None:
    """{clip} {image} {prompt} {endpoint} {key} {index} {ext} and input fields all render."""
    path = write(
        tmp_path,
        HEAD + 'output: "{endpoint}/{image}-{prompt}-{resolution}-{edit_strength}-{index:03d}'
        '-{key}{ext}"\n',
    )
    [job] = plan(path).jobs
    assert str(job.output) == f"video-to-video/city-noir-540p-none-000-{job.key[:12]}.mp4"


def test_default_template_keeps_matrix_jobs_apart(tmp_path: Path) -> None:
    """Without output:, each matrix field joins the file name so jobs never collide."""
    path = write(tmp_path, HEAD + "matrix: {edit_strength: [adhere_1, flex_1]}\n")
    outputs = [str(job.output) for job in plan(path).jobs]
    assert outputs == ["city/noir-adhere_1.mp4", "city/noir-flex_1.mp4"]


def test_jobs_entries_make_text_jobs(tmp_path: Path) -> None:
    """jobs: entries with prompts: and their own matrix make one job per prompt × value."""
    path = write(
        tmp_path,
        """\
        name: t
        prompts: {noir: "film noir", sepia: "sepia"}
        jobs:
          - endpoint: luma/agent/ray/v3.2/text-to-video
            prompts: [noir, sepia]
            matrix: {aspect_ratio: ["16:9", "9:16"]}
          - endpoint: luma/agent/uni-1/v1/text-to-image
            prompt: sepia
            input: {output_format: jpeg}
          - endpoint: luma/agent/uni-1/v1/text-to-image
            input: {prompt: "written inline"}
            output: "inline/{prompt}{ext}"
        """,
    )
    jobs = plan(path).jobs
    assert [str(job.output) for job in jobs] == [
        "text-to-video/noir-16:9.mp4",
        "text-to-video/noir-9:16.mp4",
        "text-to-video/sepia-16:9.mp4",
        "text-to-video/sepia-9:16.mp4",
        "text-to-image/sepia.jpg",
        "inline/none.png",
    ]
    assert jobs[-1].arguments["prompt"] == "written inline"
    assert jobs[0].clip is None and jobs[0].estimated_cost == 0.50


def test_local_files_in_input_fields_are_uploaded_too(tmp_path: Path) -> None:
    """A local path in a media field (start_image_url) becomes a placeholder and a file."""
    path = write(tmp_path, HEAD + "defaults: {start_image_url: media/portrait.png}\n")
    [job] = plan(path).jobs
    start = job.arguments["start_image_url"]
    assert start.startswith("@local:")
    assert job.files[start.removeprefix("@local:")].path.name == "portrait.png"
    assert job.arguments["video_url"].removeprefix("@local:") in job.files


def test_url_clips_are_sent_as_written(tmp_path: Path) -> None:
    """URL clips keep their URL, take their id from the file name, and upload nothing."""
    path = write(
        tmp_path,
        """\
        name: t
        endpoint: luma/agent/ray/v3.2/video-to-video
        prompts: {noir: "film noir"}
        clips:
          - https://cdn.example.com/shots/take-7.mp4?sig=abc
          - {id: inline, url: "data:video/mp4;base64,AAAA"}
        """,
    )
    jobs = plan(path).jobs
    assert [job.clip for job in jobs] == ["take-7", "inline"]
    assert jobs[0].arguments["video_url"] == "https://cdn.example.com/shots/take-7.mp4?sig=abc"
    assert all(not job.files for job in jobs)


def test_pass_through_endpoint_jobs(tmp_path: Path) -> None:
    """An unmodelled endpoint gets the input as written, its source in video_url, no price."""
    path = write(
        tmp_path,
        """\
        name: t
        endpoint: fal-ai/some-upscaler/v2
        passthrough: true
        defaults: {scale: 2}
        clips: [media/city.mp4]
        prompts: {noir: "film noir"}
        """,
    )
    result = plan(path)
    [job] = result.jobs
    assert job.arguments == {
        "scale": 2,
        "prompt": "film noir",
        "video_url": job.arguments["video_url"],
    }
    assert job.estimated_cost is None and str(job.output) == "city/noir"
    costs = plan_summary(result, None)["endpoints"]
    assert list(costs) == ["fal-ai/some-upscaler/v2"]
    assert costs["fal-ai/some-upscaler/v2"]["unpriced"] == 1
    assert costs["fal-ai/some-upscaler/v2"]["estimated_cost"] == 0.0


def test_only_and_exclude_filter_without_changing_jobs(tmp_path: Path) -> None:
    """Filters keep jobs by clip or prompt pattern (a clip glob and a prompt glob select
    their product); keys and outputs do not move."""
    path = write(
        tmp_path,
        """\
        name: t
        endpoint: luma/agent/ray/v3.2/video-to-video
        clips: [media/city.mp4, media/beach.mp4]
        prompts: {noir: "film noir", sepia: "sepia"}
        output: "{index}-{clip}-{prompt}.mp4"
        """,
    )
    everything = {job.key: str(job.output) for job in plan(path).jobs}
    only = plan(path, only=["beach"]).jobs
    assert [str(job.output) for job in only] == ["2-beach-noir.mp4", "3-beach-sepia.mp4"]
    assert all(everything[job.key] == str(job.output) for job in only)
    assert [job.clip for job in plan(path, only=["*"], exclude=["sep*"]).jobs] == ["city", "beach"]
    assert [(j.clip, j.prompt) for j in plan(path, only=["noir", "city"]).jobs] == [
        ("city", "noir")
    ]


def test_yaml_anchors_and_merge_keys_work(tmp_path: Path) -> None:
    """Anchors, aliases and << merge keys are plain YAML and load as such."""
    path = write(
        tmp_path,
        """\
        name: t
        endpoint: luma/agent/ray/v3.2/video-to-video
        defaults: &base {resolution: 720p, duration: 5s}
        clips:
          - {path: media/city.mp4, input: {<<: *base, duration: 10s}}
        prompts: {noir: "film noir"}
        """,
    )
    [job] = plan(path).jobs
    assert (job.arguments["resolution"], job.arguments["duration"]) == ("720p", "10s")


def test_manifest_schema_describes_the_format() -> None:
    """The JSON Schema lists the top-level keys and allows string shorthand for clips."""
    schema = manifest_schema()
    assert {"name", "clips", "prompts", "matrix", "jobs", "limits"} <= set(schema["properties"])
    assert schema["required"] == ["name"]
    assert schema["additionalProperties"] is False
    kinds = schema["properties"]["clips"]["items"]["anyOf"]
    assert {"type": "string", "description": "a path, a glob, or an http(s) URL"} in kinds


# ----------------------------------------------------------------------------- job keys


def test_written_defaults_give_the_same_keys(tmp_path: Path) -> None:
    """Writing an endpoint default out (or null for an option) changes no job key."""
    implicit = write(tmp_path, HEAD, "implicit.yaml")
    explicit = write(
        tmp_path,
        HEAD + "defaults: {resolution: 540p, duration: 5s, hdr: false, edit_strength: null}\n",
        "explicit.yaml",
    )
    assert [j.key for j in plan(implicit).jobs] == [j.key for j in plan(explicit).jobs]


def test_editing_one_prompt_changes_only_its_keys(tmp_path: Path) -> None:
    """A changed prompt is a new job; every other job keeps its key."""
    text = HEAD.replace('{noir: "film noir"}', '{noir: "film noir", sepia: "sepia"}')
    before = {(j.clip, j.prompt): j.key for j in plan(write(tmp_path, text, "a.yaml")).jobs}
    edited = write(tmp_path, text.replace('"sepia"}', '"sepia, grainier"}'), "b.yaml")
    after = {(j.clip, j.prompt): j.key for j in plan(edited).jobs}
    assert after[("city", "noir")] == before[("city", "noir")]
    assert after[("city", "sepia")] != before[("city", "sepia")]


def test_file_bytes_not_names_make_the_key(tmp_path: Path) -> None:
    """Renaming a clip keeps its jobs' keys; changing one byte of it makes new ones."""
    path = write(tmp_path, HEAD)
    [original] = plan(path).jobs
    os.rename(tmp_path / "media" / "city.mp4", tmp_path / "media" / "renamed.mp4")
    path.write_text(HEAD.replace("city.mp4", "renamed.mp4"))
    [renamed] = plan(path).jobs
    assert renamed.key == original.key and renamed.clip == "renamed"
    with (tmp_path / "media" / "renamed.mp4").open("r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        last = handle.read(1)
        handle.seek(-1, os.SEEK_END)
        handle.write(bytes([last[0] ^ 1]))
    [touched] = plan(path).jobs
    assert touched.key != original.key


# ----------------------------------------------------------------------------- errors

# (id, manifest text, line, field, phrase of the message)
ERRORS: list[tuple[str, str | bytes, int | None, str, str]] = [
    (
        "typo-top",
        HEAD + "promts: {a: b}\n",
        6,
        "promts",
        "unknown field 'promts'; did you mean 'prompts'?",
    ),
    (
        "typo-entry",
        HEAD.replace("- media/city.mp4", "- {pth: media/city.mp4}"),
        5,
        "clips[0].pth",
        "did you mean 'path'?",
    ),
    (
        "typo-input",
        HEAD + "  - {path: media/beach.mp4, input: {resolutoin: 720p}}\n",
        6,
        "clips[1].input.resolutoin",
        "unknown field 'resolutoin'; did you mean 'resolution'?",
    ),
    (
        "typo-defaults",
        HEAD + "defaults:\n  resolutoin: 720p\n",
        7,
        "defaults.resolutoin",
        "no endpoint in this manifest takes 'resolutoin'; did you mean 'resolution'?",
    ),
    (
        "typo-limits",
        HEAD + "limits:\n  luma/agent/ray/v3.2/video-to-video:\n    max_source_secs: 18\n",
        8,
        "limits.luma/agent/ray/v3.2/video-to-video.max_source_secs",
        "did you mean 'max_source_seconds'?",
    ),
    (
        "hdr-540p",
        HEAD + "defaults:\n  hdr: true\n",
        7,
        "defaults.hdr",
        "HDR needs resolution 720p or 1080p (got 540p)",
    ),
    (
        "hdr-in-matrix",
        HEAD + "matrix:\n  exr_export: [false, true]\n",
        7,
        "matrix.exr_export[1]",
        "EXR export needs hdr: true",
    ),
    (
        "loop-edit",
        HEAD + "  - {path: media/beach.mp4, input: {loop: true}}\n",
        6,
        "clips[1].input.loop",
        "loop is not available for video-to-video edits",
    ),
    (
        "missing-file",
        HEAD.replace("city.mp4", "nope.mp4"),
        5,
        "clips[0].path",
        "media/nope.mp4: no such file",
    ),
    (
        "empty-glob",
        HEAD.replace("media/city.mp4", '"media/*.mov"'),
        5,
        "clips[0].path",
        "media/*.mov matches no file",
    ),
    (
        "directory",
        HEAD.replace("media/city.mp4", "media"),
        5,
        "clips[0].path",
        "media: is a directory",
    ),
    (
        "glob-with-id",
        HEAD + '  - {id: x, path: "media/b*.mp4"}\n',
        6,
        "clips[1].id",
        "ids come from its file names",
    ),
    (
        "file-url",
        HEAD.replace("media/city.mp4", "file:///tmp/city.mp4"),
        5,
        "clips[0].url",
        "file:// URLs are not accepted",
    ),
    (
        "ftp-url",
        HEAD + '  - {url: "ftp://host/a.mp4"}\n',
        6,
        "clips[1].url",
        "scheme ftp:// is not accepted",
    ),
    (
        "ftp-input",
        HEAD + "defaults:\n  start_image_url: ftp://host/a.png\n",
        7,
        "defaults.start_image_url",
        "scheme ftp://",
    ),
    (
        "path-and-url",
        HEAD + "  - {path: media/beach.mp4, url: 'https://x.com/a.mp4'}\n",
        6,
        "clips[1].path",
        "exactly one of path",
    ),
    (
        "same-output",
        HEAD + "  - media/beach.mp4\noutput: '{prompt}.mp4'\n",
        7,
        "output",
        "city × noir and beach × noir both render to 'noir.mp4' with template '{prompt}.mp4'",
    ),
    (
        "same-output-jobs",
        "name: t\nendpoint: fal-ai/x\nprompts: {a: b}\njobs:\n  - {prompt: a, output: x.mp4}\n"
        "  - {prompt: a, output: ./x.mp4, input: {n: 1}}\npassthrough: true\n",
        6,
        "jobs[1].output",
        "jobs[0] (none × a) and jobs[1] (none × a) both render to 'x.mp4'",
    ),
    (
        "same-job",
        HEAD + "jobs: [{clip: city, prompt: noir, output: again.mp4}]\n",
        6,
        "jobs[0]",
        "city × noir and jobs[0] (city × noir) are the same job",
    ),
    (
        "duplicate-id",
        HEAD + "  - {id: city, path: media/beach.mp4}\n",
        6,
        "clips[1]",
        "id 'city' (media/beach.mp4) is already used by clips[0] (media/city.mp4)",
    ),
    (
        "template-dotdot",
        HEAD + "output: '../{clip}.mp4'\n",
        6,
        "output",
        "climbs out of output_dir",
    ),
    ("template-absolute", HEAD + "output: '/srv/{clip}.mp4'\n", 6, "output", "is absolute"),
    ("template-drive", HEAD + "output: 'C:/{clip}.mp4'\n", 6, "output", "is absolute"),
    (
        "rendered-dotdot",
        HEAD + "output: '{clip}/{user}/x.mp4'\nmatrix: {user: ['../../up']}\n",
        6,
        "output",
        "renders 'city/../../up/x.mp4', which climbs out of output_dir",
    ),
    (
        "rendered-nul",
        HEAD + 'output: "{user}.mp4"\nmatrix: {user: ["a\\0b"]}\n',
        6,
        "output",
        "contains a NUL character",
    ),
    (
        "template-unknown",
        HEAD + "output: '{clip}/{promt}.mp4'\n",
        6,
        "output",
        "unknown variable {promt}; did you mean 'prompt'?",
    ),
    ("template-syntax", HEAD + "output: '{clip'\n", 6, "output", "is not a valid template"),
    (
        "template-attr",
        HEAD + "output: '{clip.name}.mp4'\n",
        6,
        "output",
        "{clip.name} is not a template variable",
    ),
    ("duplicate-key", "name: a\nname: b\n", 2, "name", "duplicate key 'name' (first on line 1)"),
    (
        "duplicate-nested",
        HEAD + "  - {id: a, path: media/beach.mp4, id: b}\n",
        6,
        "clips[1].id",
        "duplicate key 'id'",
    ),
    (
        "tabs",
        "name: t\nclips:\n\t- media/city.mp4\n",
        3,
        "",
        "a tab is used for indentation; YAML needs spaces",
    ),
    (
        "yaml-binary",
        HEAD + "defaults: {user: !!binary aGVsbG8=}\n",
        6,
        "defaults.user",
        "binary values are not supported",
    ),
    ("yaml-nan", HEAD + "max_cost: .nan\n", 6, "max_cost", "'.nan' is not a finite number"),
    ("empty", "", None, "", "the manifest is empty"),
    ("only-comments", "# nothing yet\n", None, "", "the manifest is empty"),
    ("not-utf8", b"name: t\nprompts: {a: caf\xe9}\n", 2, "", "is not UTF-8 text (byte 0xe9"),
    ("syntax", "name: t\nprompts: [unclosed\n", 2, "", "YAML syntax error"),
    ("not-mapping", "- a\n- b\n", 1, "", "the manifest must be a mapping"),
    ("missing-name", "endpoint: fal-ai/x\n", 1, "name", "required"),
    ("bad-name", 'name: "my demo"\n', 1, "name", "may only contain letters, digits"),
    (
        "concurrency",
        HEAD + "concurrency: 1000000000\n",
        6,
        "concurrency",
        "less than or equal to 1000",
    ),
    (
        "empty-matrix",
        HEAD + "matrix: {edit_strength: []}\n",
        6,
        "matrix.edit_strength",
        "at least 1 item",
    ),
    (
        "bad-endpoint-id",
        HEAD.replace("luma/agent/ray/v3.2/video-to-video", "ray 3.2"),
        2,
        "endpoint",
        "is not a fal endpoint id",
    ),
    (
        "no-endpoint",
        "name: t\nprompts: {a: b}\nclips: [media/city.mp4]\n",
        3,
        "clips[0].endpoint",
        "no endpoint: set endpoint:",
    ),
    (
        "clip-to-text",
        HEAD.replace("ray/v3.2/video-to-video", "uni-1/v1/text-to-image"),
        5,
        "clips[0]",
        "takes no clip or image; list text-to-image jobs under jobs:",
    ),
    (
        "image-to-edit",
        HEAD + "images: [media/portrait.png]\n",
        6,
        "images[0]",
        "is an image, but luma/agent/ray/v3.2/video-to-video takes a video (video_url)",
    ),
    (
        "reframe-missing",
        HEAD.replace("video-to-video", "reframe"),
        5,
        "clips[0].input.aspect_ratio",
        "required by luma/agent/ray/v3.2/reframe",
    ),
    (
        "jobs-prompt",
        HEAD + "jobs:\n  - {endpoint: luma/agent/ray/v3.2/text-to-video, prompt: nior}\n",
        7,
        "jobs[0].prompt",
        "no prompt is named 'nior'; did you mean 'noir'?",
    ),
    (
        "jobs-clip",
        HEAD + "jobs:\n  - {clip: cty, prompt: noir}\n",
        7,
        "jobs[0].clip",
        "no clip or image has id 'cty'; did you mean 'city'?",
    ),
    (
        "prompt-too-long",
        HEAD.replace('"film noir"', "'" + "x" * 6001 + "'"),
        3,
        "prompts.noir",
        "at most 6000 characters",
    ),
    ("no-jobs", "name: t\n", 1, "", "makes no jobs"),
    (
        "too-many-jobs",
        HEAD.replace("luma/agent/ray/v3.2/video-to-video", "fal-ai/x")
        + "matrix:\n"
        + "".join(f"  f{i}: [0,1,2,3,4,5,6,7,8,9]\n" for i in range(7))
        + "passthrough: true\n",
        1,
        "",
        "expands to 10,000,000 jobs; raybatch plans at most 250,000",
    ),
    (
        "alias-bomb",
        "name: t\na: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n"
            for i in range(7)
        ),
        1,
        "",
        "expands to more than 5,000,000 values",
    ),
    (
        "too-deep",
        "name: t\ndefaults: " + "[" * 80 + "]" * 80 + "\n",
        2,
        "defaults",
        "is nested more than 64 levels deep",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "field", "phrase"),
    [
        pytest.param(text, line, field, phrase, id=name)
        for name, text, line, field, phrase in ERRORS
    ],
)
def test_problem_names_file_line_and_field(
    tmp_path: Path, text: str | bytes, line: int | None, field: str, phrase: str
) -> None:
    """Each kind of mistake is reported at its line and field path, in plain words."""
    problems = problems_of(write(tmp_path, text))
    matching = [p for p in problems if phrase in p.message]
    assert matching, "\n".join(map(str, problems))
    assert (matching[0].line, matching[0].field) == (line, field), matching[0]


def test_problem_spelling_matches_the_format(tmp_path: Path) -> None:
    """A problem prints as file:line: field: message, exactly."""
    path = write(
        tmp_path,
        HEAD + "  - id: beach\n    path: media/beach.mp4\n    input:\n      resolution: 480p\n",
    )
    [problem] = problems_of(path)
    assert str(problem) == (
        f"{path}:9: clips[1].input.resolution: '480p' is not one of 540p, 720p, 1080p"
    )


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    """Problems in different places of one manifest all come back in one error."""
    path = write(
        tmp_path,
        HEAD
        + "  - media/missing.mp4\n"
        + "  - {path: media/beach.mp4, input: {resolution: 480p, loop: true}}\n"
        + "output: '{clip}/{prompt}-{strength}.mp4'\n",
    )
    fields = {problem.field for problem in problems_of(path)}
    assert fields == {
        "clips[1].path",
        "clips[2].input.resolution",
        "clips[2].input.loop",
        "output",
    }


def test_problem_list_is_capped(tmp_path: Path) -> None:
    """Thirty missing files show the first twenty and a count of the rest."""
    clips = "".join(f"  - media/missing{i}.mp4\n" for i in range(30))
    problems = problems_of(write(tmp_path, HEAD + clips))
    assert len(problems) == MAX_SHOWN_PROBLEMS + 1
    assert problems[-1].message == "... and 10 more"


def test_repeated_problem_is_counted_not_repeated(tmp_path: Path) -> None:
    """A template that collides for every job reports once, with how many more collide."""
    path = write(tmp_path, HEAD + "  - media/beach.mp4\n  - media/forest.mp4\noutput: 'x.mp4'\n")
    [problem] = problems_of(path)
    assert problem.message.endswith("(1 more like this)")


def test_numeric_keys_and_absolute_globs(tmp_path: Path) -> None:
    """A prompt named 2024 is the name "2024"; an absolute glob is taken as written."""
    path = write(
        tmp_path,
        f"""\
        name: t
        endpoint: luma/agent/ray/v3.2/video-to-video
        prompts: {{2024: "this year"}}
        clips: ["{tmp_path}/media/[cb]*.mp4"]
        """,
    )
    jobs = plan(path).jobs
    assert [(job.clip, job.prompt) for job in jobs] == [("beach", "2024"), ("city", "2024")]


def test_yaml_base_60_numbers_stay_strings(tmp_path: Path) -> None:
    """An unquoted 16:9 is the aspect ratio, not YAML 1.1's integer 969."""
    path = write(
        tmp_path,
        """\
        name: t
        jobs:
          - endpoint: luma/agent/ray/v3.2/text-to-video
            input: {prompt: "horses", aspect_ratio: 16:9}
        """,
    )
    assert plan(path).jobs[0].arguments["aspect_ratio"] == "16:9"


def test_absurd_but_valid_values_work(tmp_path: Path) -> None:
    """concurrency 1000 and a 6000-character prompt are accepted as they are."""
    path = write(
        tmp_path, HEAD.replace('"film noir"', "'" + "x" * 6000 + "'") + "concurrency: 1000\n"
    )
    result = plan(path)
    assert result.facts.concurrency == 1000 and len(result.jobs) == 1


def test_each_distinct_input_is_validated_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 clips × 4 prompts × 3 strengths validate 3 inputs, not 36 (prompts and sources vary)."""
    calls: list[dict[str, object]] = []
    validate = EndpointSpec.validate

    def counting(self: EndpointSpec, data: dict[str, Any]) -> object:
        calls.append(data)
        return validate(self, data)

    monkeypatch.setattr(EndpointSpec, "validate", counting)
    prompts = "{" + ", ".join(f"p{i}: 'prompt {i}'" for i in range(4)) + "}"
    path = write(
        tmp_path,
        HEAD.replace('{noir: "film noir"}', prompts)
        + "  - media/beach.mp4\n  - https://example.com/c.mp4\n"
        + "matrix: {edit_strength: [adhere_1, flex_1, reimagine_1]}\n",
    )
    assert len(plan(path).jobs) == 36
    assert len(calls) == 3


def test_a_hundred_thousand_jobs_plan(tmp_path: Path) -> None:
    """1,000 URL clips × 100 prompts plan into 100,000 distinct jobs."""
    clips = "".join(f"  - https://cdn.example.com/clip{i}.mp4\n" for i in range(1000))
    prompts = "".join(f"  p{i}: 'prompt number {i}'\n" for i in range(100))
    path = write(tmp_path, f"name: big\nendpoint: {V2V}\nclips:\n{clips}prompts:\n{prompts}")
    jobs = plan(path).jobs
    assert len(jobs) == 100_000
    assert len({job.key for job in jobs}) == 100_000
    assert str(jobs[-1].output) == "clip999/p99.mp4"
