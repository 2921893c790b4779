"""The peer: a batch script written the way people drive fal today.

fal's official Python client, ``AsyncClient.submit`` + ``handle.get()`` under an
``asyncio.Semaphore`` sized to the account's concurrency, then an httpx download of the
output file. ``handle.get()`` polls the status every 0.1 s (fal_client's default) and
fal_client retries failed requests by itself; the script keeps no state: a crash means
starting over. It reads one JSON object per line: ``{"endpoint", "arguments", "output"}``.

    python bench/peer.py jobs.jsonl --fal-url http://127.0.0.1:PORT --concurrency 40 --out DIR

It is the bench's baseline, not a tool: it only talks to the URL it is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import fal_client
import fal_client.client as fal_module
import httpx


def point_fal_client_at(url: str) -> None:
    """Aim fal_client at ``url``.

    fal_client hard-codes https://queue.fal.run, https://fal.run, https://rest.fal.ai and
    https://v3.fal.media; those hosts cannot exist here (no network, no TLS for them), so
    its module-level base URLs are patched to the emulator's origin. Everything else
    (status/response URLs, CDN token) comes from the emulator's answers, as from fal.
    """
    fal_module.QUEUE_URL_FORMAT = f"{url}/"
    fal_module.RUN_URL_FORMAT = f"{url}/"
    fal_module.REST_URL = url
    fal_module.CDN_URL = url


def output_url(result: dict[str, Any]) -> str:
    """The output file's URL in a Luma result (``{"video": {"url": ...}}``)."""
    file = result.get("video") or result.get("image") or next(iter(result.values()))
    url: str = file["url"]
    return url


async def run(jobs: list[dict[str, Any]], out: Path, concurrency: int) -> int:
    """Run every job; returns how many failed."""
    client = fal_client.AsyncClient()  # the key comes from FAL_KEY, as fal's docs show
    semaphore = asyncio.Semaphore(concurrency)

    async with httpx.AsyncClient(timeout=120) as http:

        async def one(job: dict[str, Any]) -> None:
            async with semaphore:
                handle = await client.submit(job["endpoint"], arguments=job["arguments"])
                result = await handle.get()
                response = await http.get(output_url(result))
                response.raise_for_status()
                path = out / job["output"]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(response.content)

        outcomes = await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    for failure in failures[:5]:
        print(f"peer: a job failed: {failure!r}", file=sys.stderr)
    return len(failures)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the jobs, print a one-line JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("jobs", type=Path, help="JSON lines: endpoint, arguments, output")
    parser.add_argument("--fal-url", required=True, help="the emulator's origin")
    parser.add_argument("--concurrency", type=int, default=40)
    parser.add_argument("--out", type=Path, required=True, help="where outputs go")
    args = parser.parse_args(argv)
    point_fal_client_at(args.fal_url.rstrip("/"))
    with args.jobs.open() as lines:
        jobs = [json.loads(line) for line in lines if line.strip()]
    started = time.monotonic()
    failed = asyncio.run(run(jobs, args.out, args.concurrency))
    summary = {"jobs": len(jobs), "failed": failed, "seconds": time.monotonic() - started}
    print(json.dumps(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
