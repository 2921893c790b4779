"""Property-based test of the job state machine (style-reliability §B.5, T5).

Hypothesis drives ``StateStore`` + ``Transitions`` (``runner/state.py``) through random
sequences of the events the scheduler produces, each chosen only when the job's state in
an in-memory model allows it, interleaved with crashes:

* ``crash``: the connection is closed between transactions and the file reopened, as
  after a SIGKILL;
* ``kill_mid_transaction``: a transaction is begun and written into, then the connection
  closes without COMMIT (a SIGKILL inside a transaction);
* ``torn_batch``: a batch whose last op raises must change nothing (all or nothing).

After every step the store must equal the model, every job must be in one legal state,
``request_id`` must be set exactly where a request exists (queued, running, completed,
done; and wherever a result is kept), ``done`` must record outputs, and attempts and
ambiguous counts must never go down.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from runner.job import JobSpec
from runner.state import ErrorInfo, OutputFile, StateStore, Transitions

STATES = frozenset(
    {"pending", "submitting", "queued", "running", "completed", "done", "failed", "cancelled"}
)
KEYS = ("job-a", "job-b", "job-c")
ERROR = ErrorInfo("retryable", "ServiceUnavailable", "HTTP 503 from fal", None)
FAILURE = ErrorInfo("permanent", "InputRejected", "HTTP 422: prompt rejected", None)

Op = Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class Job:
    """What the model expects the state file to say about one job."""

    state: str = "pending"
    attempts: int = 0
    ambiguous: int = 0
    request_id: str | None = None
    result: dict[str, Any] | None = None
    outputs: tuple[str, ...] = ()


@dataclass
class Seen:
    """The highest counters observed so far, per job."""

    attempts: dict[str, int] = field(default_factory=dict)
    ambiguous: dict[str, int] = field(default_factory=dict)


def _spec(key: str) -> JobSpec:
    return JobSpec(key, "luma/agent/ray/v3.2/text-to-video", {"prompt": key}, PurePosixPath(key))


class _Boom(Exception):
    """An op that fails part way through a batch."""


def _boom(conn: sqlite3.Connection) -> None:
    raise _Boom("the op failed after earlier ops of its batch ran")


keys = st.sampled_from(KEYS)


class JobStateMachine(RuleBasedStateMachine):
    """Random legal event sequences and crashes over a real state file."""

    def __init__(self) -> None:
        super().__init__()
        # On tmpfs where there is one: the properties are SQLite's and ours, not the disk's,
        # and an fsync there costs nothing.
        shm = Path("/dev/shm")
        where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="raybatch-sm-", dir=where))
        self.path = self.dir / "state.db"
        self.store = StateStore.open(self.path)
        self.store.add_jobs([_spec(key) for key in KEYS])
        self.model = {key: Job() for key in KEYS}
        self.seen = Seen()
        self.requests = 0

    def teardown(self) -> None:
        """Close the store and remove its directory."""
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------

    def apply(self, key: str, op: Op, **changes: Any) -> None:
        """Commit ``op`` as the writer would, and move the model the same way."""
        self.store.execute_batch([op])
        self.model[key] = replace(self.model[key], **changes)

    def pick(self, data: st.DataObject, *states: str) -> str:
        """A job (drawn by Hypothesis) among those in ``states``."""
        return data.draw(st.sampled_from([k for k in KEYS if self.model[k].state in states]))

    def any_in(self, *states: str) -> bool:
        """Whether some job is in one of ``states`` (a rule's precondition)."""
        return any(job.state in states for job in self.model.values())

    # -- events (each only where the scheduler could produce it) -------------------------

    @precondition(lambda self: self.any_in("pending"))
    @rule(data=st.data())
    def intent(self, data: st.DataObject) -> None:
        """Before a POST: the job is submitting its next attempt."""
        key = self.pick(data, "pending")
        attempt = self.model[key].attempts + 1
        self.apply(key, Transitions.intent(key, attempt), state="submitting", attempts=attempt)

    @precondition(lambda self: self.any_in("submitting"))
    @rule(data=st.data())
    def unsent(self, data: st.DataObject) -> None:
        """fal refused the POST outright: pending again, nothing exists at fal."""
        key = self.pick(data, "submitting")
        self.apply(key, Transitions.unsent(key), state="pending")

    @precondition(lambda self: self.any_in("submitting"))
    @rule(data=st.data())
    def submitted(self, data: st.DataObject) -> None:
        """fal accepted the POST: the request id is recorded."""
        key = self.pick(data, "submitting")
        self.requests += 1
        rid = f"req-{self.requests}"
        job = self.model[key]
        op = Transitions.submitted(key, job.attempts, rid, f"s/{rid}", f"r/{rid}", f"c/{rid}")
        self.apply(key, op, state="queued", request_id=rid)

    @precondition(lambda self: self.any_in("queued"))
    @rule(data=st.data())
    def running(self, data: st.DataObject) -> None:
        """fal reports IN_PROGRESS."""
        key = self.pick(data, "queued")
        self.apply(key, Transitions.running(key), state="running")

    @precondition(lambda self: self.any_in("running"))
    @rule(data=st.data())
    def queued_again(self, data: st.DataObject) -> None:
        """fal moved a running request back to its queue."""
        key = self.pick(data, "running")
        self.apply(key, Transitions.queued_again(key), state="queued")

    @precondition(lambda self: self.any_in("queued", "running"))
    @rule(data=st.data(), units=st.none() | st.floats(0, 100))
    def completed(self, data: st.DataObject, units: float | None) -> None:
        """The result is fetched and kept."""
        key = self.pick(data, "queued", "running")
        result = {"video": {"url": f"http://cdn/{key}.mp4", "file_size": 10}}
        op = Transitions.completed(key, result, units)
        self.apply(key, op, state="completed", result=result)

    @precondition(lambda self: self.any_in("completed"))
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        """Every output verified and renamed into place."""
        key = self.pick(data, "completed")
        output = OutputFile(f"{key}.mp4", "0" * 64, 10, f"http://cdn/{key}.mp4", "video")
        self.apply(key, Transitions.done(key, [output]), state="done", outputs=(output.path,))

    @precondition(lambda self: self.any_in("queued", "running"))
    @rule(data=st.data(), resubmit=st.booleans())
    def retry(self, data: st.DataObject, resubmit: bool) -> None:
        """A retryable failure while watching; with ``resubmit`` the request is dropped."""
        key = self.pick(data, "queued", "running")
        changes: dict[str, Any] = {}
        if resubmit:
            changes = {"state": "pending", "request_id": None, "result": None}
        self.apply(key, Transitions.retry(key, ERROR, resubmit=resubmit), **changes)

    @precondition(lambda self: self.any_in("submitting"))
    @rule(data=st.data(), resubmit=st.booleans())
    def ambiguous(self, data: st.DataObject, resubmit: bool) -> None:
        """A submit whose answer was lost (or found after a crash): counted, then per policy."""
        key = self.pick(data, "submitting")
        self.apply(
            key,
            Transitions.ambiguous(key, resubmit=resubmit),
            state="pending" if resubmit else "failed",
            ambiguous=self.model[key].ambiguous + 1,
        )

    @precondition(lambda self: self.any_in("pending", "queued", "running", "completed"))
    @rule(data=st.data())
    def failed(self, data: st.DataObject) -> None:
        """The job cannot succeed; a fetched result stays recorded."""
        key = self.pick(data, "pending", "queued", "running", "completed")
        self.apply(key, Transitions.failed(key, FAILURE), state="failed")

    @precondition(lambda self: self.any_in("queued", "running"))
    @rule(data=st.data())
    def cancelled(self, data: st.DataObject) -> None:
        """``raybatch cancel`` on a request at fal."""
        key = self.pick(data, "queued", "running")
        self.apply(key, Transitions.cancelled(key, "cancelled by the user"), state="cancelled")

    @precondition(lambda self: self.any_in("failed", "cancelled"))
    @rule(data=st.data())
    def reset(self, data: st.DataObject) -> None:
        """``--retry-failed``: completed again if a result is kept, else pending."""
        key = self.pick(data, "failed", "cancelled")
        if self.model[key].result is not None:
            self.apply(key, Transitions.reset(key), state="completed")
        else:
            self.apply(key, Transitions.reset(key), state="pending", request_id=None)

    # -- crashes -------------------------------------------------------------------------

    @rule()
    def crash(self) -> None:
        """SIGKILL between transactions: the connection goes away, the file is reopened."""
        self.store.close()
        self.store = StateStore.open(self.path)

    @rule(key=keys)
    def kill_mid_transaction(self, key: str) -> None:
        """SIGKILL inside a transaction: written but never committed, so never happened."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        Transitions.failed(key, FAILURE)(conn)
        conn.execute("UPDATE jobs SET attempts = 0, ambiguous = 0 WHERE key = ?", (key,))
        conn.close()
        self.store.close()
        self.store = StateStore.open(self.path)

    @rule(key=keys, other=keys)
    def torn_batch(self, key: str, other: str) -> None:
        """A batch whose last op raises leaves every job as it was (all or nothing)."""
        ops: list[Op] = [
            Transitions.failed(key, FAILURE),
            Transitions.intent(other, self.model[other].attempts + 1),
            Transitions.done(other, []),
            _boom,
        ]
        try:
            self.store.execute_batch(ops)
        except _Boom:
            pass
        else:  # pragma: no cover - the batch must raise
            raise AssertionError("a raising op did not fail its batch")

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def store_equals_model(self) -> None:
        """The state file says exactly what the model expects, job by job."""
        rows = {row.key: row for row in self.store.rows()}
        assert set(rows) == set(KEYS)
        for key, job in self.model.items():
            row = rows[key]
            seen = Job(
                row.state,
                row.attempts,
                row.ambiguous,
                row.request_id,
                row.result,
                tuple(o["path"] for o in row.outputs),
            )
            if job.state != "done" and seen.outputs == ():
                seen = replace(seen, outputs=job.outputs)
            assert seen == job, (key, seen, job)
            assert len(self.store.attempts(key)) == job.attempts

    @invariant()
    def every_job_in_one_legal_state(self) -> None:
        """Each job has exactly one row, in one of the known states."""
        counts = dict(
            self.store._conn.execute("SELECT key, count(*) FROM jobs GROUP BY key").fetchall()
        )
        assert counts == dict.fromkeys(KEYS, 1)
        assert set(self.store.states().values()) <= STATES

    @invariant()
    def request_id_exactly_where_a_request_exists(self) -> None:
        """No request id before a submit is recorded; always one from queued to done, and
        wherever a result is kept."""
        for row in self.store.rows():
            if row.state in ("pending", "submitting"):
                assert row.request_id is None, row
            if row.state in ("queued", "running", "completed", "done"):
                assert row.request_id is not None, row
            if row.result is not None:
                assert row.request_id is not None, row
            if row.state == "completed":
                assert row.result is not None, row

    @invariant()
    def done_records_its_outputs(self) -> None:
        """A done job names at least one output file, with its size and sha256."""
        for row in self.store.rows():
            if row.state == "done":
                assert row.outputs and all(o["sha256"] and o["size"] for o in row.outputs)

    @invariant()
    def counters_never_go_down(self) -> None:
        """Attempts and ambiguous submits only ever grow."""
        for row in self.store.rows():
            assert row.attempts >= self.seen.attempts.get(row.key, 0), row
            assert row.ambiguous >= self.seen.ambiguous.get(row.key, 0), row
            self.seen.attempts[row.key] = row.attempts
            self.seen.ambiguous[row.key] = row.ambiguous

    @invariant()
    def state_file_is_intact(self) -> None:
        """SQLite's own check passes after every step, crashes included."""
        assert self.store._conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"


JobStateMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJobStateMachine = JobStateMachine.TestCase
TestJobStateMachine.__doc__ = (
    "Random event sequences and crashes never reach an inconsistent state."
)
