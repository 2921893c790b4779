"""Upload and download throughput of one big file on loopback: raybatch against curl.

Both talk to the same fresh emulator (its storage spools big bodies to disk). raybatch's
side runs in a child process (``python -m bench.transfer child ...``) that uses the
runner's own code: ``FalClient.upload`` (one streamed POST, or 10 MiB parts four at a time
above 100 MiB, as fal_client does) and ``download.download`` (streamed to a ``.part``,
sha256 on the way, fsync, atomic rename). The child times the transfer itself (no
interpreter start-up) and samples its RSS every 5 ms to report the growth over the RSS
it had before the transfer. curl's time is its own ``%{time_total}``; for a download,
plus an fsync of the file it wrote, since raybatch's time includes making its file
durable (curl's time without it is kept as ``curl_download_unsynced_mib_s``: on this
kind of disk that alone decides the ratio, whatever either client does).

Every transfer starts from the same state (untimed, see ``_settle``): nothing left to
write back, since the uploads leave gigabytes of dirty spool files in the emulator and
whichever transfer ran next would pay for writing them back; and a file's worth of page
cache just freed, since on a VM whose balloon hands free memory back to the host, writing
into never-touched page cache costs several times the CPU of reusing pages just freed,
and otherwise the second transfer each way would inherit what the first left. The two
sides also take turns going first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from .procs import BENCH_KEY, ROOT, Emulator, child_env, python

MIB = 1024 * 1024


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _RssSampler:
    """Peak RSS of this process while a block runs, sampled every 5 ms."""

    def __init__(self) -> None:
        self.before = _rss()
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


async def _child_upload(url: str, path: Path) -> dict[str, Any]:
    from runner.fal import FalClient, FalConfig

    async with FalClient(FalConfig.single_origin(url, BENCH_KEY)) as client:
        await client._cdn_auth()  # the token is fetched once per run; not part of the transfer
        with _RssSampler() as rss:
            started = time.perf_counter()
            access_url = await client.upload(path, "video/mp4")
            seconds = time.perf_counter() - started
    return {"seconds": seconds, "rss_growth": rss.peak - rss.before, "url": access_url}


async def _child_download(url: str, dest: Path, size: int) -> dict[str, Any]:
    from runner.outputs import download

    async with httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as client:
        with _RssSampler() as rss:
            started = time.perf_counter()
            got = await download(client, url, dest, root=dest.parent, expected_size=size)
            seconds = time.perf_counter() - started
    return {"seconds": seconds, "rss_growth": rss.peak - rss.before, "sha256": got.sha256}


def child(argv: list[str]) -> int:
    """``child upload URL FILE`` or ``child download URL DEST SIZE``: print a JSON line."""
    import anyio

    if argv[0] == "upload":
        result = anyio.run(_child_upload, argv[1], Path(argv[2]))
    else:
        result = anyio.run(_child_download, argv[1], Path(argv[2]), int(argv[3]))
    print(json.dumps(result))
    return 0


def _run_child(*args: str, timeout: float) -> dict[str, Any]:
    done = subprocess.run(
        python("-m", "bench.transfer", "child", *args),
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"transfer child failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _curl(*args: str, timeout: float) -> float:
    done = subprocess.run(
        ["curl", "-sS", "--fail", "--noproxy", "*", "-w", "%{time_total}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"curl failed: {done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _settle(work: Path, size: int) -> None:
    """Untimed, before each transfer: nothing left to write back, ``size`` bytes just freed."""
    os.sync()
    scratch = work / "scratch.bin"
    block = bytes(MIB)
    with scratch.open("wb") as out:
        left = size
        while left:
            left -= out.write(block[: min(MIB, left)])
    scratch.unlink()  # its dirty pages are dropped unwritten and go back to the free lists


def _fsync(path: Path) -> float:
    """Seconds to make ``path`` and its name durable, as raybatch's download does."""
    started = time.perf_counter()
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | os.O_DIRECTORY)):
        fd = os.open(target, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return time.perf_counter() - started


def make_file(path: Path, size: int) -> None:
    """``size`` bytes of incompressible data (one random MiB, repeated)."""
    block = os.urandom(MIB)
    with path.open("wb") as out:
        left = size
        while left:
            left -= out.write(block[: min(MIB, left)])


def transfer(work: Path, size: int, *, repeats: int, timeout: float) -> dict[str, Any]:
    """Best-of-``repeats`` throughput (MiB/s) each way for raybatch and curl, and RSS growth."""
    work.mkdir(parents=True, exist_ok=True)
    source = work / "big.bin"
    make_file(source, size)
    best: dict[str, float] = {}
    growth = {"upload": 0, "download": 0}

    def keep(name: str, seconds: float) -> None:
        best[name] = max(best.get(name, 0.0), size / MIB / seconds)

    try:
        with Emulator(work, limit=1, durations=(1, 1), seed=0, name="transfer-emulator") as emu:
            cdn = httpx.post(
                f"{emu.url}/storage/auth/token",
                json={},
                headers={"Authorization": f"Key {BENCH_KEY}"},
                timeout=30,
            ).json()
            token, storage = cdn["token"], cdn["base_url"]  # storage has its own origin
            uploaded: list[str] = []

            def ours_up() -> None:
                up = _run_child("upload", emu.url, str(source), timeout=timeout)
                keep("raybatch_upload", up["seconds"])
                growth["upload"] = max(growth["upload"], up["rss_growth"])
                uploaded.append(up["url"])

            def curl_up() -> None:
                seconds = _curl(
                    "-o",
                    "/dev/null",
                    "-X",
                    "POST",
                    "-T",
                    str(source),
                    "-H",
                    "Expect:",
                    "-H",
                    f"Authorization: Bearer {token}",
                    "-H",
                    "Content-Type: video/mp4",
                    "-H",
                    "X-Fal-File-Name: big.bin",
                    f"{storage}/files/upload",
                    timeout=timeout,
                )
                keep("curl_upload", seconds)

            def ours_down() -> None:
                got = work / "got" / "raybatch.bin"
                down = _run_child("download", uploaded[-1], str(got), str(size), timeout=timeout)
                keep("raybatch_download", down["seconds"])
                growth["download"] = max(growth["download"], down["rss_growth"])
                got.unlink()

            def curl_down() -> None:
                curl_got = work / "got" / "curl.bin"
                seconds = _curl("-o", str(curl_got), uploaded[-1], timeout=timeout)
                keep("curl_download_unsynced", seconds)
                keep("curl_download", seconds + _fsync(curl_got))
                curl_got.unlink()

            for n in range(repeats):
                # Who goes first alternates, so that whatever ``_settle`` cannot even out
                # does not always fall on the same side.
                legs = (ours_up, curl_up, ours_down, curl_down)
                if n % 2:
                    legs = (curl_up, ours_up, curl_down, ours_down)
                for leg in legs:
                    _settle(work, size)
                    leg()
                httpx.post(f"{emu.url}/_emulator/reset", timeout=60)  # drop the stored copies
    finally:
        source.unlink(missing_ok=True)
    figures: dict[str, Any] = {
        "size_mib": round(size / MIB, 1),
        "repeats": repeats,
        "curl_download_unsynced_mib_s": round(best["curl_download_unsynced"], 1),
    }
    for way in ("upload", "download"):
        ours, theirs = best[f"raybatch_{way}"], best[f"curl_{way}"]
        figures[way] = {
            "raybatch_mib_s": round(ours, 1),
            "curl_mib_s": round(theirs, 1),
            "ratio": round(ours / theirs, 3),
            "raybatch_rss_growth_mb": round(growth[way] / 1e6, 1),
        }
    return figures


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "child":
        raise SystemExit(child(sys.argv[2:]))
    raise SystemExit("usage: python -m bench.transfer child upload|download ...")
