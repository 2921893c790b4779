"""The downloader's worker threads: cancelling a stalled download, progress, and headers.

A raw socket server (not uvicorn) controls exactly when bytes stop flowing: its first
answer to ``/stall`` sends headers and half the body, then goes quiet with the connection
open; later requests with ``Range`` get the rest. The client's read timeout is ten
minutes, so a cancellation that came back would have had to interrupt the blocked read,
not wait for it to time out.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest

from runner import outputs as dl
from runner.errors import DownloadError

from .raw_server import RawServer, headers_of, read_head

pytestmark = pytest.mark.anyio

DATA = os.urandom(6 * 1024 * 1024 + 777)
SHA = hashlib.sha256(DATA).hexdigest()
ETAG = '"stall-1"'
PATIENT = httpx.Timeout(600.0, connect=10.0)  # far longer than any test may take


class StallingServer(RawServer):
    """HTTP/1.1 on loopback that can stop mid-body or before answering at all."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.asked = threading.Event()  # a request arrived
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            request = read_head(conn)
            if request is None:
                return
            head, _ = request
            path = head.split(b" ", 2)[1].decode()
            headers = headers_of(head)
            self.requests.append(headers)
            self.asked.set()
            if path == "/silent":
                self.released.wait()
                return
            wanted = headers.get("range")
            if wanted:
                start = int(wanted.removeprefix("bytes=").rstrip("-"))
                reply = (
                    "HTTP/1.1 206 Partial Content\r\n"
                    f"Content-Range: bytes {start}-{len(DATA) - 1}/{len(DATA)}\r\n"
                    f"Content-Length: {len(DATA) - start}\r\nETag: {ETAG}\r\n\r\n"
                )
                conn.sendall(reply.encode() + DATA[start:])
                return
            reply = f"HTTP/1.1 200 OK\r\nContent-Length: {len(DATA)}\r\nETag: {ETAG}\r\n\r\n"
            conn.sendall(reply.encode() + DATA[: len(DATA) // 2])
            self.released.wait()  # hold the connection open, sending nothing


@pytest.fixture
def stalling() -> Iterator[StallingServer]:
    """A fresh stalling server per test."""
    server = StallingServer()
    yield server
    server.close()


@pytest.fixture
def anyio_backend() -> str:
    """Run on asyncio only (what the CLI uses)."""
    return "asyncio"


def names(directory: Path) -> list[str]:
    """The names in ``directory``, sorted."""
    return sorted(p.name for p in directory.iterdir())


def _progress_until_half() -> tuple[list[int], Callable[[int], None], anyio.Event]:
    """Byte counts reported, the callback that records them, and an event set once half of
    ``DATA`` has been reported."""
    got: list[int] = []
    half = anyio.Event()

    def progress(count: int) -> None:
        got.append(count)
        if sum(got) >= len(DATA) // 2:
            half.set()

    return got, progress, half


def writer_threads() -> list[threading.Thread]:
    """Download writer threads still alive."""
    return [t for t in threading.enumerate() if t.name == "raybatch download writer"]


async def test_cancel_mid_body_returns_and_keeps_a_resumable_part(
    stalling: StallingServer, tmp_path: Path
) -> None:
    """Cancelling a download blocked on a silent socket comes back without the read
    timeout, no thread writes the part afterwards, and the next call resumes it."""
    got, progress, half = _progress_until_half()

    dest = tmp_path / "clip.mp4"
    async with httpx.AsyncClient(timeout=PATIENT) as client:
        with anyio.fail_after(60):  # a hang, not a speed limit: the read timeout is 600 s
            async with anyio.create_task_group() as group:

                async def fetch() -> None:
                    await dl.download(
                        client, f"{stalling.url}/stall", dest, root=tmp_path, on_bytes=progress
                    )

                group.start_soon(fetch)
                await half.wait()
                group.cancel_scope.cancel()
        assert writer_threads() == []
        part = tmp_path / "clip.mp4.part"
        kept = part.read_bytes()
        assert len(kept) == len(DATA) // 2 and kept == DATA[: len(kept)]
        assert (tmp_path / "clip.mp4.part.json").exists() and not dest.exists()

        got.clear()
        done = await dl.download(
            client, f"{stalling.url}/stall", dest, root=tmp_path, on_bytes=got.append
        )
    assert stalling.requests[-1]["range"] == f"bytes={len(kept)}-"
    assert stalling.requests[-1]["if-range"] == ETAG
    assert done == dl.Downloaded(dest, len(DATA), SHA)
    assert sum(got) == len(DATA) - len(kept)
    assert names(tmp_path) == ["clip.mp4"]


async def test_cancel_before_the_answer_touches_no_file(
    stalling: StallingServer, tmp_path: Path
) -> None:
    """Cancelled while waiting for the status line: back at once, no part is created."""
    async with httpx.AsyncClient(timeout=PATIENT) as client:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:

                async def fetch() -> None:
                    await dl.download(
                        client, f"{stalling.url}/silent", tmp_path / "x.mp4", root=tmp_path
                    )

                group.start_soon(fetch)
                await anyio.to_thread.run_sync(stalling.asked.wait)
                group.cancel_scope.cancel()
    assert names(tmp_path) == []


async def test_progress_is_reported_on_the_event_loop(tmp_path: Path) -> None:
    """``on_bytes`` runs in the caller's thread, never in a worker, and adds up."""
    server = StallingServer()
    loop_thread = threading.get_ident()
    calls: list[tuple[int, int]] = []
    try:
        # A part that already holds half the file makes the server answer in full (206).
        (tmp_path / "p.mp4.part").write_bytes(DATA[:1000])
        label = {"url": f"{server.url}/stall", "etag": ETAG}
        (tmp_path / "p.mp4.part.json").write_text(json.dumps(label))
        async with httpx.AsyncClient(timeout=PATIENT) as client:
            got = await dl.download(
                client,
                f"{server.url}/stall",
                tmp_path / "p.mp4",
                root=tmp_path,
                expected_sha256=SHA,
                on_bytes=lambda n: calls.append((threading.get_ident(), n)),
            )
    finally:
        server.close()
    assert got.size == len(DATA)
    assert {thread for thread, _ in calls} == {loop_thread}
    assert sum(n for _, n in calls) == len(DATA) - 1000


async def test_only_the_callers_default_headers_are_sent(
    stalling: StallingServer, tmp_path: Path
) -> None:
    """The blocking client sends the caller's default headers, and no credentials."""
    (tmp_path / "h.mp4.part").write_bytes(DATA[:10])
    label = {"url": f"{stalling.url}/stall", "etag": None}
    (tmp_path / "h.mp4.part.json").write_text(json.dumps(label))
    async with httpx.AsyncClient(timeout=PATIENT, headers={"User-Agent": "ua-check"}) as client:
        await dl.download(client, f"{stalling.url}/stall", tmp_path / "h.mp4", root=tmp_path)
    seen = stalling.requests[-1]
    assert seen["user-agent"] == "ua-check"
    assert seen["accept-encoding"] == "identity"
    assert "authorization" not in seen and "if-range" not in seen


async def test_a_short_body_is_still_a_download_error(tmp_path: Path) -> None:
    """The server hanging up mid-body is DownloadError with the bytes that came kept."""
    server = StallingServer()
    got, progress, half = _progress_until_half()

    async def hang_up() -> None:
        await half.wait()
        server.close()

    failed: list[DownloadError] = []
    async with httpx.AsyncClient(timeout=PATIENT) as client:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:
                group.start_soon(hang_up)
                try:
                    await dl.download(
                        client,
                        f"{server.url}/stall",
                        tmp_path / "s.mp4",
                        root=tmp_path,
                        on_bytes=progress,
                    )
                except DownloadError as exc:
                    failed.append(exc)
    assert len(failed) == 1 and "truncated" in str(failed[0])
    assert (tmp_path / "s.mp4.part").stat().st_size == len(DATA) // 2
