"""Request ids, and the emulator's other origins: fal's backup queue host, a primary that
refuses connections, and what fal-client 1.0.3 does about it (its BackupDomainTransport)."""

from __future__ import annotations

import socket
import time
from typing import Any

import fal_client
import fal_client.client as fal_module
import httpx
import pytest

from runner.emulator import EmulatorConfig

from .conftest import KEY, Api

T2V = "luma/agent/ray/v3.2/text-to-video"


def _binds(host: str) -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((host, 0))
    except OSError:
        return False
    return True


needs_127_0_0_2 = pytest.mark.skipif(
    not _binds("127.0.0.2"), reason="127.0.0.2 does not bind here (the backup host lives there)"
)


def test_two_instances_with_one_seed_never_share_request_ids(make_api: Any) -> None:
    """Same seed, same submits: different request ids (as fal never reuses one), yet the
    same seeded job durations."""
    runs = []
    for _ in range(2):
        api = make_api(seed=5, job_seconds=(10, 60))
        handles = [api.submit({"prompt": f"p{n}"}) for n in range(5)]
        jobs = api.emulator.emulator.account.jobs
        runs.append(
            ([h["request_id"] for h in handles], [jobs[h["request_id"]].duration for h in handles])
        )
    (ids_a, durations_a), (ids_b, durations_b) = runs
    assert not set(ids_a) & set(ids_b) and len(set(ids_a)) == 5
    assert durations_a == durations_b


@needs_127_0_0_2
def test_backup_host_shares_the_account(make_api: Any) -> None:
    """The backup origin (same port, another address) serves the same queue: a request
    submitted on one is seen, and completes, through the other; storage is not there."""
    api = make_api(backup_host="127.0.0.2", job_seconds=(0.1, 0.1))
    assert api.emulator.backup_url == api.url.replace("127.0.0.1", "127.0.0.2")
    backup = httpx.Client(
        base_url=api.emulator.backup_url, headers={"Authorization": f"Key {KEY}"}, timeout=10
    )
    with backup:
        handle = backup.post(f"/{T2V}", json={"prompt": "x"}).json()
        assert handle["status_url"].startswith(api.emulator.backup_url)
        primary_status = handle["status_url"].replace("127.0.0.2", "127.0.0.1")
        assert api.client.get(primary_status).status_code in (200, 202)
        api.wait(handle)
        assert backup.get(handle["response_url"]).status_code == 200
        assert backup.post("/files/upload", content=b"x").status_code == 404
    assert api.stats()["submits"] == 1


def _connects(url: str) -> bool:
    """Whether a new TCP connection to ``url``'s host and port is accepted."""
    parsed = httpx.URL(url)
    try:
        socket.create_connection((parsed.host, parsed.port or 80), timeout=2).close()
    except ConnectionRefusedError:
        return False
    return True


def _until(condition: Any, what: str) -> None:
    """Wait (up to 5 s) for the refusal watcher, which looks at the plan every 50 ms."""
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_refuse_fault_closes_the_queue_origin_only(make_api: Any) -> None:
    """``connect=refuse`` makes new connections to the queue origin fail at connect time
    (ECONNREFUSED, as from a host that is down) while storage answers; removing it brings
    the same origin back."""
    api = make_api()
    handle = api.submit()
    api.emulator.set_faults("connect=refuse")
    _until(lambda: not _connects(api.url), "the queue origin kept accepting connections")
    fresh = httpx.Client(headers={"Authorization": f"Key {KEY}"}, timeout=5)
    with fresh:
        with pytest.raises(httpx.ConnectError):
            fresh.get(handle["status_url"])
        assert _connects(api.storage) and api.plain.get("/_emulator/stats").status_code == 200
        api.emulator.set_faults("")
        _until(lambda: _connects(api.url), "the queue origin did not come back")
        assert fresh.get(handle["status_url"]).status_code in (200, 202)


def test_refusal_window_ends_by_itself(make_api: Any) -> None:
    """``connect@+0s..+Ns=refuse`` refuses for N seconds, then the origin answers again."""
    api = make_api()
    api.emulator.set_faults("connect@+0s..+0.6s=refuse")
    _until(lambda: not _connects(api.url), "the refusal never started")
    _until(lambda: _connects(api.url), "the refusal never ended")
    assert api.client.get("/_emulator/stats").status_code == 200


@needs_127_0_0_2
def test_fal_client_falls_back_to_the_backup_host_on_connect_errors(
    make_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fal-client 1.0.3's BackupDomainTransport resends a request that could not connect,
    once, to the mapped backup host (same scheme, port and path). Its map names fal's hosts
    (queue.fal.run → queue.falrun.com); here it maps 127.0.0.1 → 127.0.0.2."""
    api: Api = make_api(backup_host="127.0.0.2", job_seconds=(0.1, 0.1))
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", f"{api.url}/")
    monkeypatch.setattr(fal_module, "REST_URL", api.url)
    monkeypatch.setattr(fal_module, "_BACKUP_DOMAINS", {"127.0.0.1": "127.0.0.2"})
    api.emulator.set_faults("connect=refuse")
    _until(lambda: not _connects(api.url), "the queue origin kept accepting connections")
    client = fal_client.SyncClient(key=KEY)
    try:
        handle = client.submit(T2V, {"prompt": "via backup"})
        assert handle.status_url.startswith(str(api.emulator.backup_url))
        result = handle.get()  # status and result go to the backup's URLs, as returned
        assert result["video"]["url"].startswith(api.storage)
        # A request addressed to the primary (rebuilt from owner/app) falls back as well.
        assert isinstance(client.status(T2V, handle.request_id), fal_client.Completed)
    finally:
        client._client.close()
    stats = api.stats()
    assert stats["submits"] == 1 and stats["requests"][0]["state"] == "COMPLETED"


def test_pricing_route_answers_in_fals_shape(api: Api) -> None:
    """GET /v1/models/pricing: fal's documented shape, per-id rows, its error shapes."""
    answer = api.client.get(
        "/v1/models/pricing",
        params=[("endpoint_id", f"{api.V2V},{api.T2I}"), ("endpoint_id", "nobody/x")],
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["next_cursor"] is None and body["has_more"] is False
    assert body["prices"] == [
        {"endpoint_id": api.V2V, "unit_price": 0.144, "unit": "second", "currency": "USD"},
        {"endpoint_id": api.T2I, "unit_price": 0.042, "unit": "image", "currency": "USD"},
    ]
    keyless = httpx.Client(base_url=api.url, timeout=10)
    with keyless:
        denied = keyless.get("/v1/models/pricing", params={"endpoint_id": api.V2V})
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authorization_error"
    missing = api.client.get("/v1/models/pricing")
    assert missing.status_code == 400 and missing.json()["error"]["type"] == "validation_error"
    unknown = api.client.get("/v1/models/pricing", params={"endpoint_id": "nobody/x"})
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found"
    assert api.stats()["pricing_calls"] == 4


def test_config_refuses_bad_switches() -> None:
    """Unknown values of the emulator's switches fail at construction."""
    for field in ("cancel_running", "unknown_app", "v2v_long", "v2v_short"):
        with pytest.raises(ValueError, match=field):
            EmulatorConfig(**{field: "nonsense"})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        EmulatorConfig(max_streams=-1)
