"""Multipart uploads on the blocking client: against the emulator, its faults, and a CDN
that stops reading.

``FalClient`` sends multipart parts from worker threads unless a transport was injected
(``tests/test_fal.py`` covers that asyncio path with a scripted fal). Here the parts go
over real sockets: to the emulator (with small parts, so a few KiB make many of them),
and to a raw server that takes a PUT's headers and then never reads its body, so the
client blocks in ``send`` until it is cancelled.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import httpx
import pytest

from runner.emulator.config import EmulatorConfig
from runner.emulator.server import EmulatorServer
from runner.errors import AuthError, LocalFileError, ServiceUnavailable, TransportError
from runner.fal import FalClient, FalConfig, _storage as fal

from .raw_server import RawServer, headers_of, read_head

pytestmark = pytest.mark.anyio

KEY = "test-key-0123456789"
DATA = os.urandom(5 * 4096 + 123)


@pytest.fixture
def anyio_backend() -> str:
    """Run on asyncio only (what the CLI uses)."""
    return "asyncio"


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Multipart above 10 KiB, in 4 KiB parts: DATA makes six of them."""
    monkeypatch.setattr(fal, "MULTIPART_THRESHOLD", 10 * 1024)
    monkeypatch.setattr(fal, "PART_SIZE", 4096)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """DATA in a file."""
    path = tmp_path / "clip.mp4"
    path.write_bytes(DATA)
    return path


@contextmanager
def emulator(faults: str = "") -> Iterator[EmulatorServer]:
    """A running emulator with the given fault spec, stopped on leaving."""
    # 4 KiB parts (see small_parts): the emulator's S3-like 5 MiB part minimum is lowered.
    config = EmulatorConfig(
        job_seconds=(0.1, 0.2), synthetic=True, faults=faults, min_part_size=4096
    )
    server = EmulatorServer(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def fetch(url: str) -> httpx.Response:
    """GET ``url``."""
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(url)


def stats(server: EmulatorServer) -> dict[str, object]:
    """The emulator's counters."""
    answer: dict[str, object] = httpx.get(f"{server.url}/_emulator/stats", timeout=10).json()
    return answer


async def test_parts_arrive_whole_and_in_order(small_parts: None, clip: Path) -> None:
    """Six parts, four at a time, join into exactly the file; the served copy says so."""
    with emulator() as server:
        async with FalClient(FalConfig.single_origin(server.url, KEY)) as client:
            url = await client.upload(clip, "video/mp4")
        served = await fetch(url)
        counted = stats(server)
    assert served.content == DATA
    digest = base64.b64encode(hashlib.sha256(DATA).digest()).decode()
    assert served.headers["repr-digest"] == f"sha-256=:{digest}:"
    assert counted["uploads"] == 1 and counted["upload_calls"] == 1 + 6 + 1


@pytest.mark.parametrize(
    ("fault", "error", "words"),
    [
        ("upload#3=auth", AuthError, "CDN rejected the upload token"),
        ("upload#4=503", ServiceUnavailable, None),
    ],
)
async def test_a_failing_part_is_classified_like_any_upload(
    small_parts: None, clip: Path, fault: str, error: type[Exception], words: str | None
) -> None:
    """A part the CDN refuses raises what ``_send`` would; a refused token is dropped."""
    with emulator(fault) as server:
        async with FalClient(FalConfig.single_origin(server.url, KEY)) as client:
            with pytest.raises(error, match=words):
                await client.upload(clip, "video/mp4")
            assert (client._token is None) == (error is AuthError)
            again = await client.upload(clip, "video/mp4")  # the fault fired once
        assert (await fetch(again)).content == DATA


async def test_a_part_dropped_mid_request_is_a_transport_error(
    small_parts: None, clip: Path
) -> None:
    """The CDN hanging up on a part is a retryable transport failure, not a crash."""
    with emulator("upload#2=reset-before") as server:
        async with FalClient(FalConfig.single_origin(server.url, KEY)) as client:
            with pytest.raises(TransportError, match="in transit"):
                await client.upload(clip, "video/mp4")


async def test_a_file_that_shrinks_is_a_local_error(
    small_parts: None, clip: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A source that ends early while its parts are read is a LocalFileError (the file is
    named; fal is not blamed), as in one POST."""
    real = fal._file_chunks_blocking

    def shrinking(path: Path, offset: int, length: int) -> Iterator[bytes]:
        os.truncate(path, 100)
        return real(path, offset, length)

    monkeypatch.setattr(fal, "_file_chunks_blocking", shrinking)
    with emulator() as server:
        async with FalClient(FalConfig.single_origin(server.url, KEY)) as client:
            with pytest.raises(LocalFileError, match="local file .* shrank"):
                await client.upload(clip, "video/mp4")


class DeafCdn(RawServer):
    """Token and multipart answers like fal's; part PUTs are read up to the headers only."""

    def __init__(self) -> None:
        self.putting = threading.Event()
        super().__init__()

    def serve(self, conn: socket.socket) -> None:
        with conn:
            while (request := read_head(conn)) is not None:
                head, rest = request
                method, path = head.split(b" ", 2)[:2]
                if method == b"PUT":
                    self.putting.set()
                    self.released.wait()  # never read the body
                    return
                length = int(headers_of(head).get("content-length", 0))
                while len(rest) < length:
                    rest += conn.recv(65536)
                if path.startswith(b"/storage/auth/token"):
                    body = {"token": "deaf-token-0123456789", "token_type": "Bearer"}
                    body["expires_at"] = "2999-01-01T00:00:00+00:00"
                else:
                    body = {"access_url": f"{self.url}/files/x/big.mp4", "uploadId": "UP"}
                payload = json.dumps(body).encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )


@pytest.fixture
def deaf() -> Iterator[DeafCdn]:
    """A CDN that stops reading part bodies."""
    server = DeafCdn()
    yield server
    server.close()


async def test_cancel_while_a_part_send_is_blocked(
    deaf: DeafCdn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parts too big for the socket buffers block in ``send``; cancelling comes back
    without waiting for the (ten-minute) write timeout."""
    monkeypatch.setattr(fal, "MULTIPART_THRESHOLD", 1024 * 1024)
    monkeypatch.setattr(fal, "PART_SIZE", 32 * 1024 * 1024)
    big = tmp_path / "big.mp4"
    with big.open("wb") as out:
        out.truncate(40 * 1024 * 1024)
    config = FalConfig.single_origin(deaf.url, KEY)
    async with FalClient(config, timeout=600.0) as client:
        with anyio.fail_after(60):  # a hang, not a speed limit: the write timeout is 600 s
            async with anyio.create_task_group() as group:
                group.start_soon(client.upload, big, "video/mp4")
                await anyio.to_thread.run_sync(deaf.putting.wait)
                await anyio.sleep(0.2)  # let the sends fill the socket buffers and block
                group.cancel_scope.cancel()
