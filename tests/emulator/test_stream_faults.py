"""Status-stream faults (silent, close-early), the per-key stream cap, and timed faults."""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from runner.emulator.faults import FaultPlan, parse_spec

from .conftest import KEY, Api


def read_stream(api: Api, handle: dict[str, Any], read_timeout: float) -> tuple[str, str]:
    """Everything a status stream sends until it ends ("closed") or goes quiet ("quiet")."""
    seen = ""
    timeout = httpx.Timeout(5.0, read=read_timeout)
    with api.client.stream("GET", handle["status_url"] + "/stream", timeout=timeout) as answer:
        assert answer.status_code == 200
        try:
            for text in answer.iter_text():
                seen += text
        except httpx.ReadTimeout:
            return seen, "quiet"
    return seen, "closed"


def test_silent_stream_sends_nothing_while_the_job_completes(make_api: Any) -> None:
    """stream=silent: headers, then neither events nor pings, even past COMPLETED."""
    api = make_api(faults="stream=silent", job_seconds=(0.2, 0.2))
    handle = api.submit()
    seen, how = read_stream(api, handle, read_timeout=0.8)
    assert (seen, how) == ("", "quiet")
    assert api.status(handle)["status"] == "COMPLETED"  # polling still works
    assert api.stats()["faults"] == {"stream": {"silent": 1}}


def test_silent_after_events_then_quiet(make_api: Any) -> None:
    """stream=silent:1 sends the first status, then goes quiet."""
    api = make_api(faults="stream=silent:1", job_seconds=(0.3, 0.3))
    handle = api.submit()
    seen, how = read_stream(api, handle, read_timeout=0.8)
    assert how == "quiet" and seen.count("data: ") == 1 and "COMPLETED" not in seen


def test_close_early_ends_the_stream_before_completed(make_api: Any) -> None:
    """stream=close-early: one event, then a clean end without COMPLETED; the next stream
    (no fault) runs to COMPLETED."""
    api = make_api(faults="stream#1=close-early", job_seconds=(0.4, 0.4))
    handle = api.submit()
    seen, how = read_stream(api, handle, read_timeout=5)
    assert how == "closed" and seen.count("data: ") == 1 and "COMPLETED" not in seen
    again, how = read_stream(api, handle, read_timeout=5)
    assert how == "closed" and '"status": "COMPLETED"' in again


def test_streams_beyond_the_cap_get_429(make_api: Any) -> None:
    """max_streams=2: a third concurrent stream for the key is 429; closing one frees a slot."""
    api = make_api(max_streams=2, job_seconds=(60, 60))
    handles = [api.submit() for _ in range(3)]
    readers = []  # kept: a dropped iterator closes its stream
    with ExitStack() as first, ExitStack() as second:
        for stack, handle in ((first, handles[0]), (second, handles[1])):
            response = stack.enter_context(
                api.client.stream("GET", handle["status_url"] + "/stream")
            )
            assert response.status_code == 200
            readers.append(response.iter_text())
            next(readers[-1])  # the first event: the stream is live
        refused = api.client.get(handles[2]["status_url"] + "/stream")
        assert refused.status_code == 429 and "at most 2" in refused.json()["detail"]
        other_key = httpx.Client(base_url=api.url, headers={"Authorization": "Key other"})
        with other_key, other_key.stream("GET", handles[2]["status_url"] + "/stream") as mine:
            assert mine.status_code == 200  # the cap is per key
        second.close()
        deadline = time.monotonic() + 5
        while api.stats()["streams_open"] > 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        with api.client.stream("GET", handles[2]["status_url"] + "/stream") as freed:
            assert freed.status_code == 200
    stats = api.stats()
    assert stats["streams_refused"] == 1 and stats["streams_max"] == 3


def test_window_grammar() -> None:
    """``ops@+Ss..+Es=fault`` makes one timed rule per op; ``all`` is every fal call."""
    _, rules = parse_spec("all@+0s..+100s=503; status,result@+2.5s..=500@0.5")
    assert len(rules) == 11 and {r.op for r in rules[:9]} >= {"submit", "cdn", "token"}
    assert all((r.start, r.end) == (0, 100) for r in rules[:9])
    assert (rules[9].op, rules[10].op, rules[10].start, rules[10].rate) == (
        "status",
        "result",
        2.5,
        0.5,
    )
    assert rules[10].end == float("inf")


@pytest.mark.parametrize(
    "spec",
    [
        "connect=503",
        "status=refuse",
        "connect#1=refuse",
        "all=silent",
        "all@+5s..+1s=503",
        "status@5=500",
        "status,bogus=500",
    ],
)
def test_bad_window_and_op_specs_are_refused(spec: str) -> None:
    """Faults on ops they do not fit, backwards windows and unknown ops raise ValueError."""
    with pytest.raises(ValueError):
        parse_spec(spec)


def test_window_fires_only_inside_it() -> None:
    """A timed rule fires from its start to its end, counted from installation or reset."""
    now = [100.0]
    plan = FaultPlan("status@+1s..+2s=503; connect@+1s..+2s=refuse", clock=lambda: now[0])
    assert plan.draw("status") is None and not plan.refusing()
    now[0] = 101.5
    assert plan.draw("status") is not None and plan.refusing()
    now[0] = 102.0
    assert plan.draw("status") is None and not plan.refusing()
    plan.reset()  # windows run again from now
    now[0] = 103.2
    assert plan.draw("status") is not None


def test_outage_window_answers_503_to_every_call_then_recovers(make_api: Any) -> None:
    """``all@+0s..+Ns=503``: submit, status, result, token and CDN all answer 503 during the
    window (the issue's 100 s outage, shortened), and normally after it."""
    api = make_api(job_seconds=(0.05, 0.05))
    handle = api.submit()
    api.wait(handle)
    result = api.client.get(handle["response_url"]).json()
    api.emulator.set_faults("all@+0s..+1s=503")
    calls = [
        api.client.post(f"/{api.T2V}", json={"prompt": "x"}),
        api.client.get(handle["status_url"]),
        api.client.get(handle["response_url"]),
        api.client.post("/storage/auth/token", json={}),
        api.plain.get(result["video"]["url"]),
    ]
    assert [c.status_code for c in calls] == [503] * 5
    time.sleep(1.05)
    assert api.client.get(handle["response_url"]).status_code == 200
    assert api.plain.get(result["video"]["url"]).status_code == 200
    stats = api.stats()
    assert stats["submits"] == 1
    assert {op: kinds["503"] for op, kinds in stats["faults"].items()} == {
        "submit": 1,
        "status": 1,
        "result": 1,
        "token": 1,
        "cdn": 1,
    }
    assert KEY  # the keyed client made every call above
