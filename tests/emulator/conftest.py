"""Fixtures for the emulator's protocol tests: servers on loopback, clients, waiting.

STUB RENDERER: these tests pin the emulator's protocol layer, not its media, so their
emulators get the tiny ``stub_render`` below instead of ``render.py`` (through the
``renderer=`` seam of ``EmulatorServer``). ``render.py`` has its own tests, and
``test_server.py::test_real_renderer_synthetic`` runs it behind the protocol layer.

Tests that take ``api`` share one emulator per session, reset before each test; tests
that need other settings start their own through ``make_api``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from runner.emulator import EmulatorConfig, EmulatorServer

KEY = "test-key-not-a-secret"


@dataclass(frozen=True)
class StubFile:
    """Same shape as ``render.RenderedFile``."""

    data: bytes
    content_type: str
    file_name: str
    extra: dict[str, Any] = field(default_factory=dict)


def stub_render(
    endpoint: str,
    arguments: dict[str, Any],
    fetch: Callable[[str], bytes],
    *,
    seed: int,
    synthetic: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Echo the fetched inputs into one file, so tests can see what the model read."""
    if arguments.get("prompt") == "CRASH":
        raise RuntimeError("stub renderer asked to crash")
    inputs = b"".join(fetch(v) for k, v in sorted(arguments.items()) if k.endswith("_url") and v)
    if "uni-1" in endpoint:
        image = StubFile(b"IMG" + inputs, "image/png", "image.png", {"width": 8, "height": 8})
        return {"images": [image], "seed": seed}
    return {"video": StubFile(b"VID" + inputs, "video/mp4", "output.mp4"), "seed": seed}


def _server(**overrides: Any) -> EmulatorServer:
    settings: dict[str, Any] = {"job_seconds": (0.1, 0.2), "synthetic": True, **overrides}
    server = EmulatorServer(EmulatorConfig(**settings), renderer=stub_render)
    server.start()
    return server


@pytest.fixture
def anyio_backend() -> str:
    """Async tests here run on asyncio, like uvicorn."""
    return "asyncio"


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., EmulatorServer]]:
    """Start emulators (0.1-0.2 s jobs, stub renderer) that stop when the test ends."""
    servers: list[EmulatorServer] = []

    def make(**overrides: Any) -> EmulatorServer:
        servers.append(_server(**overrides))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


class Api:
    """An httpx client with a key, pointed at one emulator, plus the moves every test makes."""

    T2V = "luma/agent/ray/v3.2/text-to-video"
    V2V = "luma/agent/ray/v3.2/video-to-video"
    T2I = "luma/agent/uni-1/v1/text-to-image"

    def __init__(self, emulator: EmulatorServer) -> None:
        self.emulator = emulator
        #: The queue (and REST) origin.
        self.url = emulator.url
        #: The storage and CDN origin (the CDN token's base_url).
        self.storage = emulator.storage_url
        # verify=False: plain HTTP on loopback, and loading the CA bundle costs ~0.1 s a client.
        keyed = {"Authorization": f"Key {KEY}"}
        self.client = httpx.Client(base_url=emulator.url, headers=keyed, timeout=10, verify=False)
        #: No key, on the storage origin: for uploads with a CDN token and file downloads.
        self.plain = httpx.Client(base_url=emulator.storage_url, timeout=10, verify=False)

    def submit(self, arguments: Any = None, endpoint: str = T2V, **kwargs: Any) -> dict[str, Any]:
        """Submit and return the (checked) submit body."""
        body = {"prompt": "a calm sea"} if arguments is None else arguments
        response = self.client.post(f"/{endpoint}", json=body, **kwargs)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def status(self, handle: dict[str, Any], **params: Any) -> dict[str, Any]:
        """The status body (any 2xx)."""
        response = self.client.get(handle["status_url"], params=params)
        assert response.status_code in (200, 202), response.text
        body: dict[str, Any] = response.json()
        return body

    def wait(
        self, handle: dict[str, Any], state: str = "COMPLETED", timeout: float = 20.0
    ) -> dict[str, Any]:
        """Poll until the request reports ``state``; fails the test after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (body := self.status(handle, logs=1))["status"] != state:
            assert time.monotonic() < deadline, f"still {body['status']}, wanted {state}"
            time.sleep(0.02)
        return body

    def run(self, arguments: Any = None, endpoint: str = T2V) -> httpx.Response:
        """Submit, wait for completion and fetch the result."""
        handle = self.submit(arguments, endpoint)
        self.wait(handle)
        return self.client.get(handle["response_url"])

    def stats(self) -> dict[str, Any]:
        """The emulator's counters."""
        return self.emulator.stats()

    def close(self) -> None:
        """Close both clients."""
        self.client.close()
        self.plain.close()


@pytest.fixture
def make_api(make_emulator: Callable[..., EmulatorServer]) -> Iterator[Callable[..., Api]]:
    """Start an emulator with config overrides and return an :class:`Api` for it."""
    apis: list[Api] = []

    def make(**overrides: Any) -> Api:
        apis.append(Api(make_emulator(**overrides)))
        return apis[-1]

    yield make
    for api in apis:
        api.close()


@pytest.fixture(scope="session")
def shared_emulator() -> Iterator[EmulatorServer]:
    """One emulator with the default test settings for the whole session."""
    server = _server()
    yield server
    server.stop()


@pytest.fixture
def api(shared_emulator: EmulatorServer) -> Iterator[Api]:
    """An :class:`Api` on the shared emulator, reset (no faults, no state) for this test."""
    shared_emulator.set_faults("")
    shared_emulator.reset()
    api = Api(shared_emulator)
    yield api
    api.close()
