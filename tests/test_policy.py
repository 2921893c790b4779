"""The fault-policy table, row by row, with its "how often" numbers at their boundaries.

The engine runs directly on a scripted fal (``tests/fakefal.py``: ``httpx.MockTransport``,
a real SQLite state file, no subprocess), with stamina's testing mode on so backoffs take
no time. Each test names the README fault-table row it checks.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from runner.pipeline import TABLE, Action, Policy
from runner.pipeline._gates import Gates
from runner.state import JobState, StateStore

from .fakefal import FakeFal, reply, run_jobs, specs

pytestmark = pytest.mark.anyio

RETRIES = 8


@pytest.fixture
def anyio_backend() -> str:
    """Run on asyncio (what the CLI uses)."""
    return "asyncio"


def _states(store: StateStore) -> list[JobState]:
    return [row.state for row in store.rows()]


def _error_of(store: StateStore) -> str:
    (row,) = store.rows()
    return f"{row.error_class}: {row.error}"


def _too_many(retry_after: str | None = None) -> httpx.Response:
    headers = {"retry-after": retry_after} if retry_after is not None else None
    return reply(429, {"detail": "Too many requests"}, headers)


async def test_429_with_retry_after_costs_one_attempt_each(tmp_path: Path) -> None:
    """Row "429 with Retry-After": 7 in a row, then the 8th try goes through (8 tries per
    submit), and the pause is not an extra attempt."""
    fal = FakeFal()
    fal.script("submit", [_too_many("0.01")] * (RETRIES - 1))
    summary, store = await run_jobs(tmp_path, fal, specs(1))
    try:
        assert summary.done == 1 and fal.calls["submit"] == RETRIES
        assert fal.submits == 1 and store.spend().paid_attempts == 1
    finally:
        store.close()


async def test_429_past_the_limit_fails_naming_the_429(tmp_path: Path) -> None:
    """Row "429 with Retry-After": the 8th 429 in a row fails the job, and says why."""
    fal = FakeFal()
    fal.script("submit", [_too_many("0.01")] * RETRIES)
    summary, store = await run_jobs(tmp_path, fal, specs(1))
    try:
        assert summary.failed == 1 and fal.calls["submit"] == RETRIES and fal.submits == 0
        assert "RateLimited" in _error_of(store) and "429" in _error_of(store)
        assert store.spend().usd == 0.0, "a refused submit is never paid"
    finally:
        store.close()


async def test_429_pause_is_shared_by_every_submit(tmp_path: Path) -> None:
    """Row "429 with Retry-After": one 429 pauses every submit for that long, not only its
    own job's."""
    fal = FakeFal()
    # The first POST is refused with a 429; the second (another job's, sent at the same
    # moment) answers a 503 a little later, so its retry comes after the 429 was read.
    fal.script("submit", [_too_many("0.3"), (0.05, reply(503, {"detail": "busy"}))])
    posts: list[float] = []
    fal.on_call = lambda op, _r: posts.append(time.monotonic()) if op == "submit" else None
    summary, store = await run_jobs(tmp_path, fal, specs(2), concurrency=2)
    store.close()
    assert summary.done == 2 and len(posts) == 4
    first, retries = posts[0], posts[2:]
    # Both retries waited for the pause the one 429 asked for.
    assert all(t - first >= 0.29 for t in retries), [round(t - first, 3) for t in posts]


async def test_429_without_retry_after_backs_off_and_gives_up_at_8(tmp_path: Path) -> None:
    """Row "429 without Retry-After": exponential backoff, 8 tries."""
    fal = FakeFal()
    fal.script("submit", [_too_many()] * RETRIES)
    summary, store = await run_jobs(tmp_path, fal, specs(1))
    store.close()
    assert summary.failed == 1 and fal.calls["submit"] == RETRIES


@pytest.mark.parametrize(
    "answer",
    [
        reply(503, "<html><center>nginx</center></html>"),
        reply(500, {"detail": "boom"}, {"x-fal-request-id": "x"}),
        reply(503, {"detail": "busy"}, {"x-fal-request-id": "x"}),
    ],
    ids=["ingress-503", "app-500", "app-503"],
)
@pytest.mark.parametrize(("refusals", "done"), [(RETRIES - 1, True), (RETRIES, False)])
async def test_5xx_on_submit_is_retried_8_times(
    tmp_path: Path, answer: httpx.Response, refusals: int, done: bool
) -> None:
    """Row "ingress 503, app 500/503 on submit": nothing was created; retried, 8 tries.
    (The outage gate is set not to trip here: one call's retries, not an outage.)"""
    fal = FakeFal()
    fal.script("submit", [answer] * refusals)
    summary, store = await run_jobs(tmp_path, fal, specs(1), outage_after=100)
    try:
        assert (summary.done, summary.failed) == ((1, 0) if done else (0, 1))
        assert fal.calls["submit"] == min(refusals + 1, RETRIES)
        assert store.spend().paid_attempts == (1 if done else 0)
    finally:
        store.close()


@pytest.mark.parametrize(
    "lost",
    [reply(502, "bad gateway"), reply(504, "gateway timeout"), httpx.ReadTimeout],
    ids=["502", "504", "read-timeout"],
)
async def test_lost_submit_answer_is_ambiguous_and_counted(
    tmp_path: Path, lost: httpx.Response | type[httpx.RequestError]
) -> None:
    """Row "502/504 on submit, reset or timeout during the submit": ambiguous, resubmitted
    once per lost answer, and counted as paid."""
    fal = FakeFal()
    fal.script("submit", [lost])
    summary, store = await run_jobs(tmp_path, fal, specs(1))
    try:
        assert summary.done == 1 and summary.ambiguous == 1
        assert fal.calls["submit"] == 2
        spend = store.spend()
        assert (spend.paid_attempts, spend.ambiguous) == (2, 1), "the lost one may have billed"
    finally:
        store.close()


async def test_lost_submit_answer_fails_with_on_ambiguous_fail(tmp_path: Path) -> None:
    """Row "502/504 on submit" with --on-ambiguous fail: never resubmitted."""
    fal = FakeFal()
    fal.script("submit", [reply(502, "bad gateway")])
    summary, store = await run_jobs(tmp_path, fal, specs(1), on_ambiguous="fail")
    try:
        assert summary.failed == 1 and fal.calls["submit"] == 1
        assert "dashboard" in _error_of(store)
    finally:
        store.close()


@pytest.mark.parametrize(("failures", "done"), [(RETRIES - 1, True), (RETRIES, False)])
async def test_status_errors_are_polled_again_8_times(
    tmp_path: Path, failures: int, done: bool
) -> None:
    """Row "status answer slow, 5xx or cut": polled again with backoff, 8 per poll; the
    job that gives up keeps its request (no new submission)."""
    fal = FakeFal()
    fal.script("status", [reply(500, {"detail": "hiccup"})] * failures)
    summary, store = await run_jobs(tmp_path, fal, specs(1), watch="poll", outage_after=100)
    try:
        assert (summary.done == 1) is done and fal.submits == 1
        if not done:
            (row,) = store.rows()
            assert row.request_id == "req-1", "kept, so --retry-failed can re-attach"
    finally:
        store.close()


async def test_broken_stream_falls_back_to_polling(tmp_path: Path) -> None:
    """Row "a broken SSE stream falls back to polling": the job finishes, one submit."""
    fal = FakeFal()
    fal.script("stream", [reply(200, "data: {not json\n\n")])
    summary, store = await run_jobs(tmp_path, fal, specs(1))
    store.close()
    assert summary.done == 1 and fal.submits == 1 and fal.calls["status"] >= 1


async def test_back_in_queue_is_recorded_and_watched_on(tmp_path: Path) -> None:
    """Row "IN_PROGRESS back to IN_QUEUE": recorded (queued again), watched to the end."""
    fal = FakeFal()
    summary, store = await run_jobs(tmp_path, fal, specs(1), watch="poll")
    store.close()
    fal2 = FakeFal()
    original = fal2._answer

    def regress(op: str, request: httpx.Request) -> httpx.Response:
        answer = original(op, request)
        for held in fal2.requests.values():
            held.states = ["IN_QUEUE", "IN_PROGRESS", "IN_QUEUE", "IN_PROGRESS"]
        return answer

    fal2._answer = regress  # type: ignore[method-assign]
    summary, store = await run_jobs(tmp_path / "again", fal2, specs(1), watch="poll")
    store.close()
    assert summary.done == 1 and fal2.submits == 1 and fal2.calls["status"] == 5


@pytest.mark.parametrize(("errors", "done"), [(2, True), (3, False)])
async def test_retryable_error_type_resubmits_up_to_3_submissions(
    tmp_path: Path, errors: int, done: bool
) -> None:
    """Row "COMPLETED with a retryable error_type": submitted again as a new request, up to
    3 submissions per job; each one is paid and counted."""
    fal = FakeFal()
    fal.complete_with = ["runner_server_error"] * errors
    summary, store = await run_jobs(tmp_path, fal, specs(1))
    try:
        assert fal.submits == min(errors + 1, 3)
        assert (summary.done == 1) is done
        assert store.spend().paid_attempts == fal.submits
        assert store.spend().resubmitted == fal.submits - 1
        if not done:
            assert "gave up after 3 paid submission(s)" in _error_of(store)
    finally:
        store.close()


@pytest.mark.parametrize("error_type", ["bad_request", "client_cancelled"])
async def test_permanent_error_type_fails_once(tmp_path: Path, error_type: str) -> None:
    """Row "COMPLETED with bad_request or client_cancelled": the job fails, once."""
    fal = FakeFal()
    fal.complete_with = [error_type]
    summary, store = await run_jobs(tmp_path, fal, specs(1))
    store.close()
    assert summary.failed == 1 and fal.submits == 1


@pytest.mark.parametrize(
    ("answer", "cls"),
    [
        (reply(422, {"detail": [{"loc": ["body", "prompt"], "msg": "too long"}]}), "InputRejected"),
        (reply(422, {"detail": "content_policy_violation: nsfw"}), "ContentModerated"),
    ],
    ids=["validation", "moderation"],
)
async def test_422_and_moderation_fail_at_once(
    tmp_path: Path, answer: httpx.Response, cls: str
) -> None:
    """Rows "422 validation" and "content moderation": the job fails, never retried."""
    fal = FakeFal()
    fal.script("submit", [answer])
    summary, store = await run_jobs(tmp_path, fal, specs(1))
    try:
        assert summary.failed == 1 and fal.calls["submit"] == 1
        assert _error_of(store).startswith(cls)
    finally:
        store.close()


@pytest.mark.parametrize("resubmit", [False, True])
async def test_expired_result_fails_unless_resubmit_expired(tmp_path: Path, resubmit: bool) -> None:
    """Row "result gone before it was fetched": the job fails (rendering again is billed
    again) unless --resubmit-expired."""
    fal = FakeFal()
    fal.script("result", [reply(404, {"status": "NOT_FOUND"})])
    summary, store = await run_jobs(tmp_path, fal, specs(1), resubmit_expired=resubmit)
    try:
        assert fal.submits == (2 if resubmit else 1)
        assert (summary.done == 1) is resubmit
        if not resubmit:
            assert "--resubmit-expired" in _error_of(store)
    finally:
        store.close()


@pytest.mark.parametrize("resubmit", [False, True])
async def test_request_unknown_on_status_is_treated_as_expired(
    tmp_path: Path, resubmit: bool
) -> None:
    """A 404 NOT_FOUND on status falls under the expired-result rule."""
    fal = FakeFal()
    fal.script("status", [reply(404, {"status": "NOT_FOUND"})])
    summary, store = await run_jobs(
        tmp_path, fal, specs(1), resubmit_expired=resubmit, watch="poll"
    )
    store.close()
    assert fal.submits == (2 if resubmit else 1)
    assert (summary.done == 1) is resubmit


@pytest.mark.parametrize("code", [400, 405, 409, 410, 422])
async def test_other_4xx_on_status_never_pays_again(tmp_path: Path, code: int) -> None:
    """Any other 4xx about an existing request: the job fails keeping its request, and
    nothing is submitted again (409 is a transport-like retry, also never a resubmit)."""
    fal = FakeFal()
    fal.script("status", [reply(code, {"detail": "refused"})] * RETRIES)
    summary, store = await run_jobs(tmp_path, fal, specs(1), watch="poll", outage_after=100)
    try:
        assert fal.submits == 1, "no new paid request"
        (row,) = store.rows()
        assert summary.failed == 1 and row.request_id == "req-1"
    finally:
        store.close()


async def test_403_on_status_stops_the_run_without_resubmitting(tmp_path: Path) -> None:
    """A 403 on status is a refused key: the run stops (exit 3); no new submission."""
    fal = FakeFal()
    fal.script("status", [reply(403, {"detail": "forbidden"})])
    summary, store = await run_jobs(tmp_path, fal, specs(1), watch="poll")
    store.close()
    assert summary.fatal is not None and summary.fatal.exit_code == 3
    assert fal.submits == 1


@pytest.mark.parametrize(("failures", "done"), [(RETRIES - 1, True), (RETRIES, False)])
async def test_cdn_errors_are_downloaded_again_8_times_keeping_the_result(
    tmp_path: Path, failures: int, done: bool
) -> None:
    """Row "CDN 404/403/5xx on an output": downloaded again, 8 tries, then the job fails
    keeping its result (so --retry-failed downloads again without paying)."""
    fal = FakeFal()
    fal.script("cdn", [reply(404, "gone")] * failures)
    summary, store = await run_jobs(tmp_path, fal, specs(1))
    try:
        assert (summary.done == 1) is done and fal.submits == 1
        assert fal.calls["cdn"] == min(failures + 1, RETRIES)
        if not done:
            (row,) = store.rows()
            assert row.result is not None
    finally:
        store.close()


async def test_bad_key_stops_the_run(tmp_path: Path) -> None:
    """Row "401/403 (bad key)": the run stops submitting at once; exit 3."""
    fal = FakeFal()
    fal.script("submit", [reply(401, {"detail": "bad key"})])
    summary, store = await run_jobs(tmp_path, fal, specs(3), concurrency=1, queue_buffer=0)
    store.close()
    assert summary.fatal is not None and "API key" in str(summary.fatal)
    assert fal.submits == 0 and fal.calls["submit"] == 1


@pytest.mark.parametrize("down", [httpx.ConnectError, reply(503, "<html>nginx</html>")])
async def test_an_outage_holds_every_call_at_one_gate(
    tmp_path: Path, down: type[httpx.RequestError] | httpx.Response
) -> None:
    """fal unreachable (or 5xx to everything) for far more calls than any job has tries:
    the run waits at the outage gate, no job spends its attempts or fails, and every job
    finishes once fal answers; nothing is submitted twice."""
    fal = FakeFal()
    failures = RETRIES * 6
    fal.script("submit", [down] * failures)
    summary, store = await run_jobs(
        tmp_path, fal, specs(4), concurrency=4, outage_probe=0.001, max_outage=60
    )
    try:
        assert summary.done == 4 and summary.failed == 0
        assert fal.calls["submit"] == failures + 4 and fal.submits == 4
        assert store.spend().paid_attempts == 4
    finally:
        store.close()


async def test_an_outage_past_the_limit_stops_the_run(tmp_path: Path) -> None:
    """fal unreachable for longer than --max-outage: the run stops (exit 3) saying since
    when; the jobs are left pending for the next run, none failed."""
    fal = FakeFal()
    fal.script("submit", [httpx.ConnectError] * 10_000)
    summary, store = await run_jobs(tmp_path, fal, specs(2), outage_probe=0.001, max_outage=0.3)
    try:
        assert summary.fatal is not None and summary.fatal.exit_code == 3
        assert "unreachable since" in str(summary.fatal)
        assert summary.failed == 0 and set(_states(store)) == {JobState.PENDING}
    finally:
        store.close()


async def test_a_cdn_outage_holds_downloads_not_jobs(tmp_path: Path) -> None:
    """The CDN down for many tries: downloads wait at its gate; nothing fails, nothing is
    submitted again."""
    fal = FakeFal()
    fal.script("cdn", [httpx.ConnectError] * (RETRIES * 4))
    summary, store = await run_jobs(tmp_path, fal, specs(2), outage_probe=0.001)
    store.close()
    assert summary.done == 2 and fal.submits == 2


def test_every_error_class_has_one_action() -> None:
    """The table decides every class once; flags pick the two flag-dependent rows."""
    gates = Gates(outage_limit=1, status_per_second=1, on_note=lambda _m: None)
    strict, lenient = Policy(gates), Policy(gates, on_ambiguous="fail", resubmit_expired=True)
    from runner.errors import RequestLost, ResultExpired, SubmitUnconfirmed

    assert strict.action("submit", SubmitUnconfirmed("x")) is Action.RESUBMIT
    assert lenient.action("submit", SubmitUnconfirmed("x")) is Action.FAIL
    assert strict.action("result", ResultExpired("x")) is Action.FAIL
    assert lenient.action("result", ResultExpired("x")) is Action.RESUBMIT
    assert lenient.action("status", RequestLost("x")) is Action.RESUBMIT
    assert strict.action("status", ValueError("a bug")) is Action.FAIL
    assert all(isinstance(v, Action | str) for v in TABLE.values())
