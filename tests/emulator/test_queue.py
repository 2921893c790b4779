"""The emulator's queue protocol: submit, status, stream, result and cancel, as fal does them."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from runner.emulator import _queue as emulator_queue

from .conftest import KEY, Api

UUID_LENGTH = 36


def sse_events(api: Api, handle: dict[str, Any], **params: Any) -> list[str]:
    """Every SSE line block of a status stream, read until the server closes it."""
    blocks: list[str] = []
    with api.client.stream("GET", handle["status_url"] + "/stream", params=params) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        buffer = ""
        for text in response.iter_text():
            buffer += text
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                blocks.append(block)
    return blocks


def test_submit_answers_like_fal(api: Api) -> None:
    """A submit is 200 IN_QUEUE with the app-only URLs, gateway id and x-fal-request-id."""
    response = api.client.post(f"/{api.T2V}", json={"prompt": "a calm sea"})
    assert response.status_code == 200
    body = response.json()
    request_id = body["request_id"]
    assert len(request_id) == UUID_LENGTH
    assert response.headers["x-fal-request-id"] == request_id == body["gateway_request_id"]
    assert body["status"] == "IN_QUEUE" and body["queue_position"] == 0
    base = f"{api.url}/luma/agent/requests/{request_id}"
    assert body["response_url"] == base
    assert body["status_url"] == base + "/status"
    assert body["cancel_url"] == base + "/cancel"
    optional = {
        "X-Fal-Request-Timeout": "300",
        "X-Fal-Queue-Priority": "normal",
        "X-Fal-Runner-Hint": "sticky",
        "X-Fal-Object-Lifecycle-Preference": '{"expiration_duration_seconds": 3600}',
        "X-Fal-Store-IO": "0",
        "X-Fal-No-Retry": "1",
    }
    hooked = api.client.post(
        f"/{api.T2V}?fal_webhook=https%3A%2F%2Fexample.com%2Fhook",
        json={"prompt": "x"},
        headers=optional,
    )
    assert hooked.status_code == 200 and hooked.json()["status"] == "IN_QUEUE"


def test_status_and_result_through_completion(make_api: Any) -> None:
    """Status is 202 until COMPLETED (then 200) and carries logs only when asked."""
    api = make_api(job_seconds=(0.3, 0.3))
    handle = api.submit()
    early = api.client.get(handle["status_url"], params={"logs": "false"})
    assert early.status_code == 202
    assert early.json()["status"] in ("IN_QUEUE", "IN_PROGRESS")
    assert api.client.get(handle["response_url"]).json() == {
        "detail": "Request is still in progress"
    }
    api.wait(handle, "IN_PROGRESS")
    assert api.status(handle, logs=0)["logs"] is None
    done = api.wait(handle)
    assert done["logs"][0]["message"].startswith("Running") and done["logs"][0][
        "timestamp"
    ].endswith("Z")
    assert done["metrics"]["inference_time"] > 0
    assert "error" not in done and "error_type" not in done
    for suffix in ("/status", "/status/"):  # the old SDK's trailing slash is tolerated
        final = api.client.get(handle["response_url"] + suffix, params={"logs": "true"})
        assert final.status_code == 200 and isinstance(final.json()["logs"], list)
    for url in (handle["response_url"], handle["response_url"] + "/response"):
        result = api.client.get(url)
        assert result.status_code == 200
        assert result.headers["x-fal-request-id"] == handle["request_id"]
        assert result.headers["x-fal-billable-units"] == "5"
        video = result.json()["video"]
        assert video["url"].startswith(f"{api.storage}/files/")
        assert video["content_type"] == "video/mp4"


def test_unknown_request_is_not_found(api: Api) -> None:
    """Status, result and cancel of an id fal never issued answer 404 NOT_FOUND."""
    base = f"/luma/agent/requests/{'0' * 8}-0000-4000-8000-{'0' * 12}"
    for method, path in (("GET", "/status"), ("GET", ""), ("PUT", "/cancel")):
        response = api.client.request(method, base + path)
        assert response.status_code == 404 and response.json() == {"status": "NOT_FOUND"}


def test_another_apps_url_does_not_find_the_request(api: Api) -> None:
    """A request is only known under the owner/app it was submitted to."""
    handle = api.submit()
    response = api.client.get(f"/fal-ai/flux/requests/{handle['request_id']}/status")
    assert response.status_code == 404


def test_sub_path_request_urls_are_not_routed(api: Api) -> None:
    """GET/PUT on ``{endpoint sub-path}/requests/...`` is 405, as on fal."""
    handle = api.submit()
    base = f"/{api.T2V}/requests/{handle['request_id']}"
    assert api.client.get(base + "/status").status_code == 405
    assert api.client.put(base + "/cancel").status_code == 405


def test_account_limit_and_queue_positions(make_api: Any) -> None:
    """With max_running=2, five submits leave three IN_QUEUE at positions 0, 1 and 2."""
    api = make_api(max_running=2, job_seconds=(60, 60))
    handles = [api.submit({"prompt": f"shot {n}"}) for n in range(5)]
    api.wait(handles[1], "IN_PROGRESS")
    states = [api.status(h) for h in handles]
    assert [s["status"] for s in states] == ["IN_PROGRESS"] * 2 + ["IN_QUEUE"] * 3
    assert [s["queue_position"] for s in states[2:]] == [0, 1, 2]
    api.client.put(handles[2]["cancel_url"])
    assert [api.status(h)["queue_position"] for h in handles[3:]] == [0, 1]
    stats = api.stats()
    assert stats["running_max"] == 2 and stats["running"] == 2 and stats["queued"] == 2


def test_low_priority_waits_behind_normal(make_api: Any) -> None:
    """``X-Fal-Queue-Priority: low`` queues behind normal-priority requests."""
    api = make_api(max_running=1, job_seconds=(60, 60))
    api.submit()
    low = api.submit(headers={"X-Fal-Queue-Priority": "low"})
    normal = api.submit()
    assert api.status(normal)["queue_position"] == 0
    assert api.status(low)["queue_position"] == 1


def test_status_stream_sends_each_change_then_closes(make_api: Any) -> None:
    """The SSE stream sends a data event per state or position change and ends after COMPLETED."""
    api = make_api(max_running=1, job_seconds=(0.3, 0.3))
    api.submit()
    handle = api.submit()
    blocks = sse_events(api, handle, logs=1)
    events = [json.loads(b.removeprefix("data: ")) for b in blocks if b.startswith("data: ")]
    assert events[0]["status"] == "IN_QUEUE" and events[0]["queue_position"] == 0
    assert events[-1]["status"] == "COMPLETED" and events[-1]["logs"]
    assert "IN_PROGRESS" in [e["status"] for e in events]
    assert api.stats()["stream_calls"] == 1


def test_status_stream_heartbeats_while_idle(
    make_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle stream sends ``: ping`` comments."""
    monkeypatch.setattr(emulator_queue, "HEARTBEAT_SECONDS", 0.05)
    api = make_api(job_seconds=(60, 60))
    handle = api.submit()
    with api.client.stream("GET", handle["status_url"] + "/stream") as response:
        seen = ""
        for text in response.iter_text():
            seen += text
            if ": ping\n\n" in seen:
                break
    assert seen.startswith("data: ")


def test_cancel_queued_running_completed_and_unknown(make_api: Any) -> None:
    """Cancel is 202 for queued and running requests, 400 when done, 404 unknown. A queued
    request never runs and bills nothing; a running one finishes, bills and returns its
    normal result, as fal documents (cancel_running="finish", the default)."""
    api = make_api(max_running=1, job_seconds=(0.8, 0.8))
    running, queued = api.submit(), api.submit()
    api.wait(running, "IN_PROGRESS")
    for handle in (queued, running):
        response = api.client.put(handle["cancel_url"])
        assert response.status_code == 202
        assert response.json() == {"status": "CANCELLATION_REQUESTED"}
    done = api.wait(queued)
    assert done["error_type"] == "client_cancelled" and done["metrics"] == {}  # never ran
    result = api.client.get(queued["response_url"])
    assert result.status_code == 499 and result.headers["x-fal-error-type"] == "client_cancelled"
    assert result.headers["x-fal-billable-units"] == "0"
    finished = api.wait(running)
    assert "error_type" not in finished and finished["metrics"]["inference_time"] > 0
    assert any("Cancellation requested" in line["message"] for line in finished["logs"])
    output = api.client.get(running["response_url"])
    assert output.status_code == 200 and output.headers["x-fal-billable-units"] == "5"
    assert api.plain.get(output.json()["video"]["url"]).status_code == 200
    again = api.client.put(running["cancel_url"])
    assert again.status_code == 400 and again.json() == {"status": "ALREADY_COMPLETED"}
    assert api.client.put("/luma/agent/requests/nope/cancel").json() == {"status": "NOT_FOUND"}
    stats = api.stats()
    assert stats["cancels"] == 4 and stats["billable_units"] == 5 and stats["cancelled"] == 1
    by_id = {r["request_id"]: r for r in stats["requests"]}
    assert (
        by_id[queued["request_id"]] | {"billed": False, "cancelled": True}
        == by_id[queued["request_id"]]
    )
    billed = by_id[running["request_id"]]
    assert billed["cancel_requested"] and not billed["cancelled"]
    assert billed["billed"] and billed["billable_units"] == 5


def test_cancel_running_abort_switch_ends_it_unbilled(make_api: Any) -> None:
    """cancel_running="abort" keeps the old behaviour: the running request ends at once,
    client_cancelled (499), billing nothing."""
    api = make_api(max_running=1, job_seconds=(60, 60), cancel_running="abort")
    running = api.submit()
    api.wait(running, "IN_PROGRESS")
    assert api.client.put(running["cancel_url"]).status_code == 202
    assert api.wait(running)["error_type"] == "client_cancelled"
    assert api.client.get(running["response_url"]).status_code == 499
    [request] = api.stats()["requests"]
    assert request["cancelled"] and request["billable_units"] == 0


def test_queue_and_storage_need_a_good_key(make_api: Any) -> None:
    """Without a usable key, queue and storage routes answer 401 and never echo the key."""
    api = make_api(bad_keys={"revoked-key"})
    keyless = httpx.Client(base_url=api.url, timeout=10)
    for authorization in (None, "", "Key", "Basic dXNlcjpwYXNz", "Key revoked-key"):
        headers = {} if authorization is None else {"Authorization": authorization}
        for path in (f"/{api.T2V}", "/storage/auth/token"):
            response = keyless.post(path, json={"prompt": "x"}, headers=headers)
            assert response.status_code == 401 and response.json() == {"detail": "Unauthorized"}
            assert "revoked" not in response.text
    keyless.close()
    assert api.stats()["submits"] == 0


def test_bearer_credentials_are_accepted(api: Api) -> None:
    """fal_client may send ``Bearer`` instead of ``Key``; both work on the queue."""
    response = api.client.post(
        f"/{api.T2V}", json={"prompt": "x"}, headers={"Authorization": "Bearer jwt"}
    )
    assert response.status_code == 200
    assert KEY not in json.dumps(api.stats())


def test_result_expires_after_its_ttl(make_api: Any) -> None:
    """After result_ttl the result is 404 NOT_FOUND while the status still says COMPLETED."""
    api = make_api(result_ttl=0.8, job_seconds=(0.05, 0.05))
    handle = api.submit()
    api.wait(handle)
    assert api.client.get(handle["response_url"]).status_code == 200
    time.sleep(0.9)
    expired = api.client.get(handle["response_url"])
    assert expired.status_code == 404 and expired.json() == {"status": "NOT_FOUND"}
    assert api.status(handle)["status"] == "COMPLETED"


def test_max_queue_length_rejects_with_429(make_api: Any) -> None:
    """``?fal_max_queue_length=N`` refuses a submit when more than N requests wait."""
    api = make_api(max_running=1, job_seconds=(60, 60))
    api.submit()
    api.submit()
    full = api.client.post(f"/{api.T2V}?fal_max_queue_length=0", json={"prompt": "x"})
    assert full.status_code == 429
    assert (
        api.client.post(f"/{api.T2V}?fal_max_queue_length=1", json={"prompt": "x"}).status_code
        == 200
    )
    assert api.stats()["submits"] == 3


def test_request_timeout_header_bounds_the_queue_wait(make_api: Any) -> None:
    """A request still queued past X-Fal-Request-Timeout ends with a user request_timeout (504)."""
    api = make_api(max_running=1, job_seconds=(60, 60))
    api.submit()
    handle = api.submit(headers={"X-Fal-Request-Timeout": "0.2"})
    assert api.wait(handle)["error_type"] == "request_timeout"
    result = api.client.get(handle["response_url"])
    assert result.status_code == 504 and result.headers["x-fal-request-timeout-type"] == "user"


@pytest.mark.parametrize(
    ("endpoint", "arguments", "field", "kind"),
    [
        ("luma/agent/ray/v3.2/video-to-video", {"prompt": "x"}, "video_url", "missing"),
        ("luma/agent/ray/v3.2/text-to-video", {"prompt": "x", "hdr": True}, "hdr", "value_error"),
        ("luma/agent/ray/v3.2/text-to-video", {"prompt": "x" * 6001}, "prompt", "string_too_long"),
        (
            "luma/agent/ray/v3.2/image-to-video",
            {"prompt": "x", "image_url": "data:,a", "duration": "10s"},
            "duration",
            "literal_error",
        ),
        (
            "luma/agent/uni-1/v1/text-to-image",
            {"prompt": "x", "aspect_ratio": "5:4"},
            "aspect_ratio",
            "literal_error",
        ),
    ],
)
def test_rule_violations_complete_with_422(
    api: Api, endpoint: str, arguments: dict[str, Any], field: str, kind: str
) -> None:
    """A bad input is accepted and completes; its result is a 422 detail list, billing 0 units."""
    handle = api.submit(arguments, endpoint)
    done = api.wait(handle)
    assert done["error"] == "Invalid status code: 422" and "error_type" not in done
    result = api.client.get(handle["response_url"])
    assert result.status_code == 422 and result.headers["x-fal-billable-units"] == "0"
    [detail] = result.json()["detail"]
    assert detail["loc"] == ["body", field] and detail["type"] == kind and detail["msg"]


def test_moderated_prompt_is_refused(api: Api) -> None:
    """A prompt with FORBIDDEN_CONTENT fails content moderation with a 422."""
    result = api.run({"prompt": "a FORBIDDEN_CONTENT scene"})
    [detail] = result.json()["detail"]
    assert result.status_code == 422 and detail["type"] == "content_policy_violation"
    assert "moderation" in detail["msg"]


def test_unreachable_input_url_is_a_422(api: Api) -> None:
    """An input URL outside the emulator cannot be fetched (no Internet): 422 on that field."""
    arguments = {"prompt": "x", "video_url": "https://example.com/clip.mp4"}
    result = api.run(arguments, api.V2V)
    [detail] = result.json()["detail"]
    assert result.status_code == 422 and detail["loc"] == ["body", "video_url"]


def test_renderer_crash_is_an_internal_error(api: Api) -> None:
    """A renderer exception completes the request with internal_error (500)."""
    result = api.run({"prompt": "CRASH"})
    assert result.status_code == 500 and result.json()["error_type"] == "internal_error"


def test_served_stand_in_apps_are_routed(api: Api) -> None:
    """Apps matching ``apps`` (test/*, bench/* by default) run with the echo renderer; their
    URLs use their own owner/app."""
    handle = api.submit({"prompt": "x"}, "test/flux/dev")
    assert handle["status_url"].startswith(f"{api.url}/test/flux/requests/")
    api.wait(handle)
    result = api.client.get(handle["response_url"])
    assert result.status_code == 200 and result.headers["x-fal-billable-units"] == "1"
    assert api.client.post("/not-an-endpoint-id", json={}).status_code == 404


def test_unknown_app_is_404_unless_accepted(make_api: Any) -> None:
    """A submit to an app the emulator does not serve is 404 with fal's detail shape and
    creates nothing; unknown_app="accept" echoes it instead (the old behaviour)."""
    strict = make_api()
    refused = strict.client.post("/fal-ai/flux/dev", json={"prompt": "x"})
    assert refused.status_code == 404
    assert refused.json() == {"detail": "Application 'fal-ai/flux' not found"}
    assert strict.stats()["submits"] == 0 and strict.stats()["submit_calls"] == 1
    lenient = make_api(unknown_app="accept")
    handle = lenient.submit({"prompt": "x"}, "fal-ai/flux/dev")
    lenient.wait(handle)
    assert lenient.client.get(handle["response_url"]).status_code == 200


def test_unknown_path_of_a_served_app_fails_at_the_result(api: Api) -> None:
    """A typo in a Luma endpoint's path is accepted (the app exists), then completes with
    the app's 404 "Path ... not found" at the result, billing nothing."""
    handle = api.submit({"prompt": "x"}, "luma/agent/ray/v3.2/video-to-vidoe")
    status = api.wait(handle)
    assert status["error"] == "Invalid status code: 404"
    result = api.client.get(handle["response_url"])
    assert result.status_code == 404 and result.headers["x-fal-billable-units"] == "0"
    assert result.json() == {"detail": "Path /ray/v3.2/video-to-vidoe not found"}


def test_empty_body_means_empty_input(api: Api) -> None:
    """JS clients send no body for ``{}``; the input is then an empty object."""
    response = api.client.post("/test/any-model", content=b"")
    assert response.status_code == 200
    assert api.client.post("/test/any-model", content=b"{not json").status_code == 400
