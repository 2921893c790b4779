"""Fault injection: the spec language, and every fault kind as a client sees it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from runner.emulator import EmulatorConfig
from runner.emulator.faults import HOSTILE_FIELDS, HOSTILE_FILE_NAMES, FaultPlan, parse_spec

from .conftest import Api


def test_spec_grammar() -> None:
    """Scripted (#N, #N-M) and random (@rate, optional ``rate:``) clauses parse, with a seed."""
    spec = (
        "seed=7; submit#3=503; submit#5=drop-after; status=429@0.05; result=expire; "
        "cdn#2=truncate; rate:submit=429-retry-after:2@0.1; status#2-4=slow:0.5; "
        "submit=error:runner_disconnected"
    )
    seed, rules = parse_spec(spec)
    assert seed == 7 and len(rules) == 8
    assert (rules[0].op, rules[0].first, rules[0].last, rules[0].fault.code) == (
        "submit",
        3,
        3,
        503,
    )
    assert (rules[2].rate, rules[2].scripted) == (0.05, False)
    assert (rules[5].fault.kind, rules[5].fault.seconds) == ("429-retry-after", 2.0)
    assert (rules[6].first, rules[6].last) == (2, 4)
    assert rules[7].fault.arg == "runner_disconnected"


@pytest.mark.parametrize(
    "spec",
    [
        "submit=teapot",
        "upload#0=500",
        "poll=500",
        "submit=regress",
        "cdn=expire",
        "status=503@2",
        "submit=error:nope",
        "slow",
        "status=slow:x",
        "submit=303",
    ],
)
def test_bad_specs_are_refused(spec: str) -> None:
    """Unknown ops or faults, faults on the wrong op, and bad numbers raise ValueError."""
    with pytest.raises(ValueError):
        parse_spec(spec)
    with pytest.raises(ValueError):
        EmulatorConfig(faults=spec)


def test_scripted_faults_count_calls_from_installation() -> None:
    """``op#N`` is the Nth call since the rule was installed; scripted rules beat random ones."""
    plan = FaultPlan("status=500; status#2=429")
    assert [f.text if f else None for f in (plan.draw("status") for _ in range(3))] == [
        "500",
        "429",
        "500",
    ]
    plan.configure("status#1=503")
    assert [plan.draw("status") is not None for _ in range(2)] == [True, False]


def test_random_faults_are_seeded(make_api: Any) -> None:
    """Two emulators with the same seed fault the same calls."""
    runs = []
    for _ in range(2):
        api = make_api(faults="seed=3; status=503@0.5", job_seconds=(60, 60))
        handle = api.submit()
        runs.append([api.client.get(handle["status_url"]).status_code for _ in range(20)])
    assert runs[0] == runs[1] and set(runs[0]) == {202, 503}


HTTP_FAULTS = [
    # fault, status, has x-fal-request-id, extra header expected
    ("429", 429, True, None),
    ("429-retry-after:2", 429, True, ("retry-after", "2")),
    ("500", 500, True, None),
    ("503", 503, True, None),
    ("502-nginx", 502, False, None),
    ("503-nginx", 503, False, None),
    ("504-nginx", 504, False, None),
    ("504-timeout", 504, True, ("x-fal-request-timeout-type", "user")),
    ("auth", 401, False, None),
]


def test_http_faults_answer_instead(make_api: Any) -> None:
    """Canned HTTP faults replace the answer of their call; nginx ones carry no x-fal-request-id."""
    spec = "; ".join(f"submit#{n}={fault}" for n, (fault, *_) in enumerate(HTTP_FAULTS, 1))
    api = make_api(faults=spec)
    for fault, status, request_id, header in HTTP_FAULTS:
        response = api.client.post(f"/{api.T2V}", json={"prompt": "x"})
        assert response.status_code == status, fault
        assert ("x-fal-request-id" in response.headers) is request_id, fault
        if "nginx" in fault:
            assert "nginx" in response.text and response.headers["content-type"].startswith(
                "text/html"
            )
        if header:
            assert response.headers[header[0]] == header[1]
        if fault == "429":
            assert "retry-after" not in response.headers
    stats = api.stats()
    assert stats["submits"] == 0 and stats["faults"] == {"submit": {f: 1 for f, *_ in HTTP_FAULTS}}
    api.submit()  # scripted faults are spent: the next call goes through


def test_reset_before_drops_the_connection_without_acting(make_api: Any) -> None:
    """``reset-before`` closes the connection with no response and records nothing."""
    api = make_api(faults="submit#1=reset-before")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.client.post(f"/{api.T2V}", json={"prompt": "x"})
    assert api.stats()["submits"] == 0
    api.submit()


def test_drop_after_accepts_the_submit_then_hangs_up(make_api: Any) -> None:
    """``drop-after`` records the submit, then hangs up: the ambiguous submit."""
    api = make_api(faults="submit#1=drop-after")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.client.post(f"/{api.T2V}", json={"prompt": "x"})
    stats = api.stats()
    assert stats["submits"] == 1 and stats["faults"] == {"submit": {"drop-after": 1}}


def test_connection_faults_on_other_operations(make_api: Any) -> None:
    """Drops work on GETs and uploads too, and the emulator keeps serving afterwards."""
    api = make_api(faults="status#1=reset-before; upload#1=reset-before; token#1=drop-after")
    handle = api.submit()
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.client.get(handle["status_url"])
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.client.post("/storage/auth/token", json={})
    token = api.client.post("/storage/auth/token", json={}).json()
    cdn = {"Authorization": f"Bearer {token['token']}"}
    with pytest.raises(httpx.TransportError):  # the client may still be writing its body
        api.plain.post(f"{api.storage}/files/upload", content=b"x" * 100_000, headers=cdn)
    assert api.wait(handle)["status"] == "COMPLETED"


def test_slow_fault_delays_the_answer(make_api: Any) -> None:
    """``slow:S`` holds the answer for S seconds (a client with a shorter timeout gives up)."""
    api = make_api(faults="status#1=slow:0.5")
    handle = api.submit()
    with pytest.raises(httpx.ReadTimeout):
        api.client.get(handle["status_url"], timeout=0.05)
    assert api.status(handle)["request_id"] == handle["request_id"]


def test_regress_requeues_a_running_request_once(make_api: Any) -> None:
    """``regress`` sends an IN_PROGRESS request back IN_QUEUE once; it then runs to completion."""
    api = make_api(faults="status=regress", job_seconds=(0.3, 0.3))
    handle = api.submit()
    seen: list[str] = []
    while not seen or seen[-1] != "COMPLETED":
        seen.append(api.status(handle)["status"])
    # The poll that regressed it answered IN_QUEUE; later polls saw it run again.
    assert "IN_QUEUE" in seen and "IN_PROGRESS" in seen[seen.index("IN_QUEUE") :]
    done = api.wait(handle)
    assert "error" not in done and any("requeued" in line["message"] for line in done["logs"])
    assert api.stats()["faults"] == {"status": {"regress": 1}}


ERRORS = {
    "runner_disconnected": 503,
    "request_timeout": 504,
    "runner_incomplete_response": 502,
    "runner_server_error": 500,
    "client_disconnected": 499,
    "bad_request": 400,
}


def test_error_fault_completes_with_that_error_type(make_api: Any) -> None:
    """``error:TYPE`` ends the job COMPLETED with that error_type and its documented HTTP status."""
    api = make_api(faults="; ".join(f"submit#{n}=error:{e}" for n, e in enumerate(ERRORS, 1)))
    handles = {error_type: api.submit() for error_type in ERRORS}
    for error_type, handle in handles.items():
        done = api.wait(handle)
        assert done["error_type"] == error_type and done["error"]
        result = api.client.get(handle["response_url"])
        assert (
            result.status_code == ERRORS[error_type]
            and result.headers["x-fal-error-type"] == error_type
        )
        assert result.json() == {"detail": done["error"], "error_type": error_type}


def test_validation_and_moderation_faults(make_api: Any) -> None:
    """``validation`` and ``moderation`` make valid inputs fail with 422s."""
    api = make_api(faults="submit#1=validation; submit#2=moderation")
    kinds = [api.run({"prompt": "fine"}).json()["detail"][0]["type"] for _ in range(2)]
    assert kinds == ["value_error", "content_policy_violation"]
    assert api.run({"prompt": "fine"}).status_code == 200


def test_expire_fault_loses_the_result_for_good(make_api: Any) -> None:
    """``expire`` makes the result 404 NOT_FOUND, and it stays gone."""
    api = make_api(faults="result#1=expire")
    handle = api.submit()
    api.wait(handle)
    for _ in range(2):
        response = api.client.get(handle["response_url"])
        assert response.status_code == 404 and response.json() == {"status": "NOT_FOUND"}


def test_cdn_faults_damage_downloads(make_api: Any) -> None:
    """cdn 404/403 refuse, ``truncate`` cuts the body short, ``corrupt`` flips bytes."""
    api = make_api(faults="cdn#1=404; cdn#2=403; cdn#3=truncate; cdn#4=corrupt")
    result = api.run({"prompt": "x", "video_url": "data:,0123456789"}, api.V2V).json()
    url = result["video"]["url"]
    assert api.plain.get(url).status_code == 404
    assert api.plain.get(url).status_code == 403
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.plain.get(url)
    corrupt = api.plain.get(url).content
    intact = api.plain.get(url).content
    assert intact == b"VID0123456789" and len(corrupt) == len(intact) and corrupt != intact
    assert api.stats()["faults"]["cdn"] == {"404": 1, "403": 1, "truncate": 1, "corrupt": 1}


def test_faults_change_at_run_time(api: Api) -> None:
    """POST /_emulator/faults replaces or extends the spec; GET shows it; bad specs are 400."""
    base = f"{api.url}/_emulator/faults"
    assert api.plain.post(base, json={"spec": "submit#1=503"}).json()["spec"] == "submit#1=503"
    assert api.client.post(f"/{api.T2V}", json={"prompt": "x"}).status_code == 503
    api.plain.post(base, json={"spec": "submit#1=500", "extend": True})
    assert api.plain.get(base).json()["spec"] == "submit#1=503; submit#1=500"
    assert api.client.post(f"/{api.T2V}", json={"prompt": "x"}).status_code == 500
    assert api.plain.post(base, json={"spec": "submit=nonsense"}).status_code == 400
    api.emulator.set_faults("")
    api.submit()


def test_hostile_fault_gives_files_escaping_names_and_foreign_urls(make_api: Any) -> None:
    """``hostile`` keeps every real URL but names files ../.., /abs, NUL, and adds file:// and ftp://."""
    api = make_api(faults="result#1=hostile")
    handle = api.submit({"prompt": "x", "video_url": "data:,0123456789"}, api.V2V)
    api.wait(handle)
    hostile = api.client.get(handle["response_url"]).json()
    plain = api.client.get(handle["response_url"]).json()
    real = plain["video"]["url"]
    assert hostile["video"]["url"] == real
    assert hostile["video"]["file_name"] == HOSTILE_FILE_NAMES[0]
    for key in HOSTILE_FIELDS:
        assert hostile[key]["url"] == real and hostile[key]["file_name"] in HOSTILE_FILE_NAMES
    assert hostile["local_file"]["url"] == "file:///etc/passwd"
    assert hostile["ftp_file"]["url"].startswith("ftp://")
    assert "local_file" not in plain and "../../evil" not in plain  # only the first was hostile
    assert plain["video"].get("file_name") not in HOSTILE_FILE_NAMES
    assert api.stats()["faults"]["result"] == {"hostile": 1}


def test_hostile_fault_applies_to_results_only() -> None:
    """``hostile`` is a result fault; on any other op the spec is refused."""
    assert parse_spec("result=hostile")[1][0].fault.kind == "hostile"
    with pytest.raises(ValueError, match="hostile applies to result"):
        parse_spec("submit=hostile")
