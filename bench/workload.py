"""The bench's workloads, written twice: as a raybatch manifest and as the peer's job list.

Two shapes:

* ``library`` — the product's case: clips × 10 looks on ``luma/agent/ray/v3.2/video-to-video``
  (the real endpoint model, so ``plan`` validates every job). Its clips are ``url:`` entries.
  The emulator answers a model input URL it does not hold with a 422
  (``file_download_error``), so for runs the bench first uploads one tiny distinct clip per
  id to that emulator's storage, as if the library were already hosted; for ``plan``,
  ``status`` and resume (which never fetch clips) the URLs are made up. The endpoint model
  forbids unknown fields, so outputs have the emulator's default synthetic size (256 KiB).
* ``synthetic`` — for the CPU curve at up to 100k jobs: the pass-through endpoint
  ``bench/synthetic/v1`` (any fal id raybatch does not know is passed through as written,
  and the emulator accepts any JSON for it) with ``_synthetic_bytes`` set so that 100k
  outputs stay small; 10 prompts × a ``variant`` matrix.

Both sides get the same jobs with the same arguments (the peer's list carries exactly
what the user would send; raybatch adds the endpoint's defaults itself).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .procs import BENCH_KEY

V2V = "luma/agent/ray/v3.2/video-to-video"
SYNTHETIC = "bench/synthetic/v1"
LOOKS = 10


@dataclass(frozen=True)
class Workload:
    """Where a workload's files are: the manifest, the peer's job list and the job count."""

    manifest: Path
    jobs_file: Path
    jobs: int
    output_dir: Path


def shape(jobs: int) -> tuple[int, int]:
    """(sources, prompts) with sources × prompts == jobs: ten looks when it divides."""
    prompts = LOOKS if jobs >= LOOKS and jobs % LOOKS == 0 else 1
    return jobs // prompts, prompts


def _prompts(count: int) -> dict[str, str]:
    return {
        f"look-{i:02d}": f"restyle look {i:02d}: film grain, warm highlights, soft teal shadows"
        for i in range(count)
    }


def upload_clips(url: str, count: int) -> list[str]:
    """Put ``count`` tiny distinct clips into an emulator's storage; their URLs, in order."""
    urls: list[str] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        cdn = client.post(
            "/storage/auth/token", headers={"Authorization": f"Key {BENCH_KEY}"}, json={}
        ).json()
        token = cdn["token"]
        for i in range(count):
            answer = client.post(
                f"{cdn['base_url']}/files/upload",  # storage is on its own origin, as at fal
                content=b"\x00\x00\x00\x18ftypmp42" + f"bench clip {i}".encode(),
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "video/mp4",
                    "X-Fal-File-Name": f"clip-{i:06d}.mp4",
                },
            )
            answer.raise_for_status()
            urls.append(answer.json()["access_url"])
    return urls


def library(directory: Path, jobs: int, clip_urls: list[str] | None = None) -> Workload:
    """The clips × looks workload; made-up clip URLs unless ``clip_urls`` are given."""
    clips, prompts = shape(jobs)
    made_up = "https://media.example.invalid/library/clip-{:06d}.mp4"
    urls = clip_urls or [made_up.format(i) for i in range(clips)]
    assert len(urls) == clips
    looks = _prompts(prompts)
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "name: bench-library",
        f"endpoint: {V2V}",
        'output: "{clip}/{prompt}.mp4"',
        "output_dir: out",
        "defaults:",
        "  resolution: 540p",
        "  duration: 5s",
        "clips:",
        *(f"  - {{id: clip-{i:06d}, url: {json.dumps(u)}}}" for i, u in enumerate(urls)),
        "prompts:",
        *(f"  {name}: {json.dumps(text)}" for name, text in looks.items()),
    ]
    manifest = directory / "manifest.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    jobs_file = directory / "jobs.jsonl"
    with jobs_file.open("w") as out:
        for i, u in enumerate(urls):
            for name, text in looks.items():
                arguments = {"prompt": text, "video_url": u, "resolution": "540p", "duration": "5s"}
                out.write(_job_line(V2V, arguments, f"clip-{i:06d}/{name}.mp4"))
    return Workload(manifest, jobs_file, clips * prompts, directory / "out")


def synthetic(directory: Path, jobs: int, output_bytes: int) -> Workload:
    """The pass-through workload for the CPU curve: looks × variants, tiny outputs."""
    variants, prompts = shape(jobs)
    looks = _prompts(prompts)
    directory.mkdir(parents=True, exist_ok=True)
    lines = [
        "name: bench-synthetic",
        f"endpoint: {SYNTHETIC}",
        "passthrough: true",
        'output: "{prompt}/{variant}.mp4"',
        "output_dir: out",
        "defaults:",
        f"  _synthetic_bytes: {output_bytes}",
        "prompts:",
        *(f"  {name}: {json.dumps(text)}" for name, text in looks.items()),
        "jobs:",
        f"  - prompts: [{', '.join(looks)}]",
        f"    matrix: {{variant: [{', '.join(str(v) for v in range(variants))}]}}",
    ]
    manifest = directory / "manifest.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    jobs_file = directory / "jobs.jsonl"
    with jobs_file.open("w") as out:
        for name, text in looks.items():
            for v in range(variants):
                arguments = {"_synthetic_bytes": output_bytes, "prompt": text, "variant": v}
                out.write(_job_line(SYNTHETIC, arguments, f"{name}/{v}.mp4"))
    return Workload(manifest, jobs_file, variants * prompts, directory / "out")


def _job_line(endpoint: str, arguments: dict[str, Any], output: str) -> str:
    return json.dumps({"endpoint": endpoint, "arguments": arguments, "output": output}) + "\n"
