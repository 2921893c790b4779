"""One test per fault fal can throw at a batch, checking the policy the README documents.

Every test runs the real CLI against an emulator process started with a fault spec
(``--faults``), then reads the emulator's counters and the state file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .conftest import Emulator, one_clip_manifest, run_cli, start_emulator, stop_emulator

RETRYABLE_TYPES = [
    "request_timeout",
    "startup_timeout",
    "runner_scheduling_failure",
    "runner_connection_timeout",
    "runner_disconnected",
    "runner_connection_refused",
    "runner_connection_error",
    "runner_incomplete_response",
    "runner_server_error",
    "internal_error",
    "client_disconnected",
]
PERMANENT_TYPES = ["bad_request", "client_cancelled"]


@dataclass
class Outcome:
    """What a faulty run left behind."""

    code: int
    stderr: str
    stats: dict[str, Any]
    rows: list[dict[str, Any]]
    out: Path
    log: str

    def by_state(self, state: str) -> list[dict[str, Any]]:
        """Rows in ``state``."""
        return [r for r in self.rows if r["state"] == state]


def _manifest(tmp_path: Path, prompts: int = 2) -> Path:
    """One clip × ``prompts`` prompts."""
    return one_clip_manifest(tmp_path, prompts, name="faults", concurrency=2)


@pytest.fixture
def faulty(tmp_path: Path) -> Iterator[Any]:
    """Run the CLI against an emulator started with a fault spec; returns an Outcome."""
    emulators: list[Emulator] = []

    def run(
        spec: str,
        *args: str,
        prompts: int = 2,
        emulator: Emulator | None = None,
        job_seconds: str = "0.2:0.4",
    ) -> Outcome:
        if emulator is None:
            emulator = start_emulator("--synthetic", "--job-seconds", job_seconds, "--faults", spec)
            emulators.append(emulator)
        manifest = _manifest(tmp_path, prompts)
        out = tmp_path / "out"
        done = run_cli("run", manifest, "--fal-url", emulator.url, "--output-dir", out, *args)
        assert "Traceback" not in done.stderr, done.stderr
        db = sqlite3.connect(out / "state.db")
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM jobs")]
        db.close()
        log = (out / "run.log").read_text() if (out / "run.log").exists() else ""
        return Outcome(done.returncode, done.stderr, emulator.stats(), rows, out, log)

    run.emulators = emulators  # type: ignore[attr-defined]
    yield run
    for emulator in emulators:
        stop_emulator(emulator)


def _assert_all_done_and_intact(outcome: Outcome) -> None:
    assert outcome.code == 0, outcome.stderr
    assert {r["state"] for r in outcome.rows} == {"done"}
    served = {o["url"]: o for r in outcome.stats["requests"] for o in r["outputs"]}
    for row in outcome.rows:
        for output in json.loads(row["outputs"]):
            data = (outcome.out / output["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == served[output["url"]]["sha256"]
    assert not list(outcome.out.rglob("*.part"))


def test_429_without_retry_after_is_retried_with_backoff(faulty: Any) -> None:
    """A 429 on submit is retried after a backoff; nothing is submitted twice."""
    outcome = faulty("submit#1=429")
    _assert_all_done_and_intact(outcome)
    assert outcome.stats["faults"]["submit"]["429"] == 1
    assert outcome.stats["submits"] == 2


def test_429_with_retry_after_pauses_submits(faulty: Any) -> None:
    """A 429 with Retry-After pauses submitting for that long, says so, then goes on."""
    outcome = faulty("submit#1=429-retry-after:1")
    _assert_all_done_and_intact(outcome)
    assert "rate limiting submits (HTTP 429); pausing them 1.0s" in outcome.log
    assert outcome.stats["submits"] == 2


@pytest.mark.parametrize("spec", ["submit#1=503-nginx", "submit#1=500", "submit#1=503"])
def test_refused_submit_is_retried_and_not_ambiguous(faulty: Any, spec: str) -> None:
    """Ingress 503 and app 500/503 on submit created nothing: retried, not counted ambiguous."""
    outcome = faulty(spec)
    _assert_all_done_and_intact(outcome)
    assert outcome.stats["submits"] == 2
    assert sum(r["ambiguous"] for r in outcome.rows) == 0


@pytest.mark.parametrize("spec", ["submit#1=502-nginx", "submit#1=504-nginx"])
def test_gateway_error_on_submit_is_ambiguous(faulty: Any, spec: str) -> None:
    """A 502/504 on submit may hide an accepted request: counted ambiguous, resubmitted."""
    outcome = faulty(spec)
    _assert_all_done_and_intact(outcome)
    assert sum(r["ambiguous"] for r in outcome.rows) == 1


def test_reset_before_response_is_ambiguous_but_not_duplicated(faulty: Any) -> None:
    """A connection reset on submit is counted ambiguous; here fal had nothing, so no double."""
    outcome = faulty("submit#1=reset-before")
    _assert_all_done_and_intact(outcome)
    assert sum(r["ambiguous"] for r in outcome.rows) == 1
    assert outcome.stats["submits"] == 2


def test_dropped_answer_after_accept_is_resubmitted_and_reported(
    faulty: Any, tmp_path: Path
) -> None:
    """The ambiguous submit (accepted, answer lost) is resubmitted by default and reported
    by `status`: the one possible double payment is visible, not hidden."""
    outcome = faulty("submit#1=drop-after")
    _assert_all_done_and_intact(outcome)
    assert outcome.stats["submits"] == 3 and outcome.stats["distinct_inputs"] == 2
    assert sum(r["ambiguous"] for r in outcome.rows) == 1
    status = run_cli("status", tmp_path / "faults.yaml", "--output-dir", outcome.out, "--json")
    assert json.loads(status.stdout)["ambiguous_submits"] == 1


def test_ambiguous_policy_fail_never_resubmits(faulty: Any) -> None:
    """With --on-ambiguous fail the job fails with an explanation and is not sent again."""
    outcome = faulty("submit#1=drop-after", "--on-ambiguous", "fail")
    assert outcome.code == 1
    (failed,) = outcome.by_state("failed")
    assert failed["error_kind"] == "ambiguous" and "not resubmitted" in failed["error"]
    assert outcome.stats["submits"] == 2


def test_slow_result_beyond_client_timeout_is_fetched_again(faulty: Any) -> None:
    """A result answer slower than --http-timeout is asked for again, not resubmitted."""
    outcome = faulty("result#1=slow:3", "--http-timeout", "1")
    _assert_all_done_and_intact(outcome)
    assert outcome.stats["submits"] == 2 and outcome.stats["result_calls"] >= 3


def test_slow_submit_beyond_client_timeout_is_ambiguous(faulty: Any) -> None:
    """A submit slower than --http-timeout is ambiguous: any second request is counted."""
    outcome = faulty("submit#1=slow:3", "--http-timeout", "1")
    _assert_all_done_and_intact(outcome)
    ambiguous = sum(r["ambiguous"] for r in outcome.rows)
    assert ambiguous == 1
    assert outcome.stats["submits"] <= 2 + ambiguous


def test_status_errors_are_retried(faulty: Any) -> None:
    """Status polls answered 503 or hung up on are retried; the jobs finish."""
    outcome = faulty("status#1=503; status#2=reset-before", "--watch", "poll")
    _assert_all_done_and_intact(outcome)
    assert outcome.stats["submits"] == 2


def test_broken_stream_falls_back_to_polling(faulty: Any) -> None:
    """A status stream that breaks is replaced by polling for that job."""
    outcome = faulty("stream#1=reset-before")
    _assert_all_done_and_intact(outcome)
    assert outcome.stats["status_calls"] >= 1


def test_in_progress_back_to_in_queue_is_followed(faulty: Any) -> None:
    """A running request sent back to fal's queue is recorded as queued and watched on."""
    # The second poll finds the job running and fal sends it back; polls come ~1 s apart.
    outcome = faulty("status#2=regress", "--watch", "poll", prompts=1, job_seconds="3:3")
    _assert_all_done_and_intact(outcome)
    assert outcome.stats["faults"]["status"]["regress"] == 1
    assert "back in fal's queue" in outcome.log


def test_every_documented_error_type_gets_its_policy(faulty: Any) -> None:
    """Retryable error_types are resubmitted (and succeed); the others fail the job."""
    types = RETRYABLE_TYPES + PERMANENT_TYPES
    spec = "; ".join(f"submit#{i + 1}=error:{t}" for i, t in enumerate(types))
    # Every first submit must come before any resubmit for the scripted numbering to hit
    # each job once: enough concurrency for all of them at once.
    outcome = faulty(spec, "--concurrency", "20", prompts=len(types))
    first_error = {}
    for request in outcome.stats["requests"]:
        if request["error_type"] and request["input_sha256"] not in first_error:
            first_error[request["input_sha256"]] = request["error_type"]
    assert sorted(first_error.values()) == sorted(types)
    submits_per_input: dict[str, int] = {}
    for request in outcome.stats["requests"]:
        h = request["input_sha256"]
        submits_per_input[h] = submits_per_input.get(h, 0) + 1
    done = outcome.by_state("done")
    failed = outcome.by_state("failed")
    assert outcome.code == 1
    assert {r["error_type"] for r in failed} == set(PERMANENT_TYPES)
    assert len(done) == len(types) - len(PERMANENT_TYPES)
    for h, error_type in first_error.items():
        expected = 2 if error_type in RETRYABLE_TYPES else 1
        assert submits_per_input[h] == expected, error_type


def test_validation_error_fails_at_once_with_the_detail(faulty: Any) -> None:
    """A 422 fails the job without a retry, with fal's field message."""
    outcome = faulty("submit#1=validation")
    assert outcome.code == 1
    (failed,) = outcome.by_state("failed")
    assert failed["error_class"] == "InputRejected" and failed["error"]
    assert outcome.stats["submits"] == 2


def test_moderation_fails_the_job_as_moderated(faulty: Any) -> None:
    """A content-moderation refusal fails the job (retrying would not help)."""
    outcome = faulty("submit#1=moderation")
    assert outcome.code == 1
    (failed,) = outcome.by_state("failed")
    assert failed["error_class"] == "ContentModerated"
    assert outcome.stats["submits"] == 2


def test_expired_result_is_not_paid_for_again_unless_asked(faulty: Any) -> None:
    """A result gone before it was fetched fails the job and says how to re-render it."""
    outcome = faulty("result#1=expire")
    assert outcome.code == 1
    (failed,) = outcome.by_state("failed")
    assert failed["error_class"] == "ResultExpired" and "--resubmit-expired" in failed["error"]
    assert outcome.stats["submits"] == 2


def test_expired_result_is_resubmitted_with_the_setting(faulty: Any) -> None:
    """With --resubmit-expired the job is rendered (and billed) again, and the log says so."""
    outcome = faulty("result#1=expire", "--resubmit-expired")
    _assert_all_done_and_intact(outcome)
    assert outcome.stats["submits"] == 3
    assert "result expired; resubmitting" in outcome.log


@pytest.mark.parametrize("fault", ["404", "403", "503", "truncate", "corrupt"])
def test_bad_cdn_answer_is_downloaded_again(faulty: Any, fault: str) -> None:
    """A CDN 404/403/503, a cut-short body or flipped bytes never reach the final name;
    the file is fetched again and verified, and nothing is resubmitted."""
    outcome = faulty(f"cdn#1={fault}")
    _assert_all_done_and_intact(outcome)
    assert outcome.stats["submits"] == 2
    assert outcome.stats["faults"]["cdn"][fault] == 1


def test_download_that_keeps_failing_is_retried_later_without_paying(faulty: Any) -> None:
    """When downloads keep failing the job fails but keeps its result: --retry-failed then
    downloads it without submitting again."""
    outcome = faulty("cdn=404", "--retries", "2")
    assert outcome.code == 1 and len(outcome.by_state("failed")) == 2
    (emulator,) = faulty.emulators
    emulator.post("/_emulator/faults", {"spec": ""})
    again = faulty("", "--retry-failed", emulator=emulator)
    _assert_all_done_and_intact(again)
    assert again.stats["submits"] == 2


def test_bad_key_stops_the_run_with_exit_3(faulty: Any) -> None:
    """A 401 stops everything at once: exit 3, a clear message, nothing more submitted."""
    outcome = faulty("submit=auth")
    assert outcome.code == 3
    assert "fal rejected the API key (HTTP 401)" in outcome.stderr
    assert outcome.stats["submits"] == 0
    assert {r["state"] for r in outcome.rows} == {"pending"}
