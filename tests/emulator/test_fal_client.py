"""fal's own Python client (``fal_client``) cannot tell the emulator from fal.

fal_client hard-codes ``https://queue.fal.run``, ``https://rest.fal.ai`` and
``https://v3.fal.media``, and those hosts cannot exist here (no network, no TLS for
them). The ``fal`` fixture therefore patches the module-level base URLs
(``QUEUE_URL_FORMAT``, ``RUN_URL_FORMAT``, ``REST_URL``) to the emulator's queue origin
and ``CDN_URL`` (single uploads only) to its storage origin. Everything else, including
the CDN token's ``base_url`` for multipart uploads (on the storage origin, not the
queue's) and the status/response/cancel URLs, comes from the emulator's answers, exactly
as from fal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fal_client
import fal_client.client as fal_module
import pytest

from .conftest import KEY, Api

T2V = "luma/agent/ray/v3.2/text-to-video"


@pytest.fixture
def fal(
    make_api: Callable[..., Api], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[Any, Api]]:
    """A ``fal_client.SyncClient`` aimed at a fresh emulator (see the module docstring)."""

    def make(**config: Any) -> tuple[Any, Api]:
        api = make_api(**config)
        monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", f"{api.url}/")
        monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", f"{api.url}/")
        monkeypatch.setattr(fal_module, "REST_URL", api.url)
        monkeypatch.setattr(fal_module, "CDN_URL", api.storage)
        return fal_client.SyncClient(key=KEY), api

    return make


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    """SyncClients to close at the end of the test (their httpx pools)."""
    clients: list[Any] = []
    yield clients
    for client in clients:
        client._client.close()


def test_submit_status_result(fal: Any, closing: list[Any]) -> None:
    """submit → status (Queued/InProgress/Completed with logs) → get and result()."""
    client, api = fal(max_running=1, job_seconds=(0.5, 0.5))
    closing.append(client)
    client.submit(T2V, {"prompt": "blocker"})
    handle = client.submit(T2V, {"prompt": "a red kite"})
    assert isinstance(handle.status(), fal_client.Queued)
    events = list(handle.iter_events(with_logs=True, interval=0.02))
    assert isinstance(events[-1], fal_client.Completed) and events[-1].logs
    assert any(isinstance(e, fal_client.InProgress) for e in events)
    result = handle.get()
    assert result["video"]["url"].startswith(f"{api.storage}/files/")
    assert client.result(T2V, handle.request_id) == result  # URL rebuilt from owner/app
    assert isinstance(client.status(T2V, handle.request_id, with_logs=True), fal_client.Completed)


def test_errors_reach_fal_client_as_fal_errors(fal: Any, closing: list[Any]) -> None:
    """A 422 and a request error surface as FalClientHTTPError with fal's detail and error_type."""
    client, _ = fal(faults="submit#2=error:runner_disconnected")
    closing.append(client)
    with pytest.raises(fal_client.FalClientHTTPError) as invalid:
        client.submit(T2V, {"prompt": ""}).get()
    detail: Any = invalid.value.message  # fal_client passes fal's detail list through
    assert invalid.value.status_code == 422 and detail[0]["loc"] == [
        "body",
        "prompt",
    ]
    with pytest.raises(fal_client.FalClientHTTPError) as lost:
        client.submit(T2V, {"prompt": "x"}).get()
    assert lost.value.status_code == 503 and lost.value.error_type == "runner_disconnected"


def test_cancel(fal: Any, closing: list[Any]) -> None:
    """cancel() of a queued request ends it client_cancelled; cancelling again is an HTTP error."""
    client, _ = fal(max_running=1, job_seconds=(60, 60))
    closing.append(client)
    client.submit(T2V, {"prompt": "blocker"})
    handle = client.submit(T2V, {"prompt": "x"})
    handle.cancel()
    status = handle.status()
    assert isinstance(status, fal_client.Completed) and status.error_type == "client_cancelled"
    with pytest.raises(fal_client.FalClientHTTPError) as again:
        handle.cancel()
    assert again.value.status_code == 400
    with pytest.raises(fal_client.FalClientHTTPError) as unknown:
        client.cancel(T2V, "00000000-0000-4000-8000-000000000000")
    assert unknown.value.status_code == 404


@pytest.mark.anyio
async def test_upload_file_and_multipart(
    fal: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """upload_file goes through the CDN token and v3 upload; big files through multipart."""
    _, api = fal()
    # AsyncClient here: the sync client's multipart path never closes its httpx client.
    client = fal_client.AsyncClient(key=KEY)
    small = tmp_path / "frame.png"
    small.write_bytes(b"\x89PNG small")
    url = await client.upload_file(small)
    assert url.startswith(f"{api.storage}/files/") and url.endswith("/frame.png")
    assert api.plain.get(url).content == b"\x89PNG small"
    # Multipart from 6 MiB, in 5 MiB parts (the smallest S3 takes): an 11 MiB file is 3 parts.
    # CDN_URL now points nowhere: multipart must go through the token's base_url.
    monkeypatch.setattr(fal_module, "MULTIPART_THRESHOLD", 6 * 1024 * 1024)
    monkeypatch.setattr(fal_module, "MULTIPART_CHUNK_SIZE", 5 * 1024 * 1024)
    monkeypatch.setattr(fal_module, "CDN_URL", "http://127.0.0.1:9")
    big = tmp_path / "clip.mp4"
    big.write_bytes(bytes(range(256)) * (11 * 4096))
    multipart_url = await client.upload_file(big)
    assert multipart_url.startswith(f"{api.storage}/files/")
    assert api.plain.get(multipart_url).content == big.read_bytes()
    stats = api.stats()
    assert stats["uploads"] == 2 and stats["token_calls"] == 1  # the token is cached


def test_fal_client_retries_ingress_errors_only(fal: Any, closing: list[Any]) -> None:
    """fal_client retries an nginx 503 (no request id) but not an app 503 (with one)."""
    client, api = fal(faults="submit#1=503-nginx; submit#3=503")
    closing.append(client)
    client.submit(T2V, {"prompt": "x"})
    with pytest.raises(fal_client.FalClientHTTPError):
        client.submit(T2V, {"prompt": "y"})
    assert api.stats()["submits"] == 1


def test_fal_client_retry_after_a_dropped_submit_duplicates_the_job(
    fal: Any, closing: list[Any]
) -> None:
    """A submit accepted and then dropped is retried by fal_client: two jobs, one input (§1, §6)."""
    client, api = fal(faults="submit#1=drop-after; submit#3=reset-before")
    closing.append(client)
    client.submit(T2V, {"prompt": "x"})
    client.submit(T2V, {"prompt": "y"})  # a reset before acting is retried harmlessly
    stats = api.stats()
    assert stats["submits"] == 3 and stats["distinct_inputs"] == 2
    assert stats["faults"] == {"submit": {"drop-after": 1, "reset-before": 1}}
