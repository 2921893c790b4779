"""Property-based test of the job state machine, graph jobs and crashes included
(style-reliability §B.5, T5).

Hypothesis drives ``StateStore`` + ``Transitions`` through random sequences of the events
the engine produces, each chosen only when the job's state in an in-memory model allows
it, interleaved with:

* ``any_transition``: an arbitrary transition on an arbitrary job; it must commit exactly
  when the model says it is legal, and otherwise raise IllegalTransition and change
  nothing (the guard is in SQL);
* ``crash``: the connection is closed between transactions and the file reopened, as
  after a SIGKILL;
* ``kill_mid_transaction``: a transaction is begun and written into, then the connection
  closes without COMMIT (a SIGKILL inside a transaction);
* ``torn_batch``: a batch whose last op raises must change nothing (all or nothing).

The jobs: three remote requests ``a``, ``b``, ``c``; a local step ``s`` taking ``a``'s
and ``b``'s outputs; a remote job ``t`` taking ``s``'s. After every step the store must
equal the model; a request id exists exactly where a request does; a blocked job never
has every parent done and a started one never lacks one; spend equals the cost of every
attempt the model says fal accepted or may have; counters never go down.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from runner.errors import IllegalTransition
from runner.job import JobSpec, parent_ref
from runner.state import ErrorInfo, JobState, OutputFile, StateStore, Transitions

S = JobState
COST = 0.5
ERROR = ErrorInfo("retryable", "ServiceUnavailable", "HTTP 503 from fal", None)
FAILURE = ErrorInfo("permanent", "InputRejected", "HTTP 422: prompt rejected", None)
REMOTE = ("a", "b", "c", "t")
PARENTS = {"s": ("a", "b"), "t": ("s",)}
KEYS = ("a", "b", "c", "s", "t")

Op = Callable[[sqlite3.Connection], None]


def _spec(key: str) -> JobSpec:
    parents = PARENTS.get(key, ())
    endpoint = "local/stitch" if key == "s" else "luma/agent/ray/v3.2/text-to-video"
    arguments: dict[str, Any] = {"prompt": key, "inputs": [parent_ref(p) for p in parents]}
    return JobSpec(key, endpoint, arguments, key, estimated_cost=COST, parents=parents)


@dataclass(frozen=True)
class Job:
    """What the model expects the state file to say about one job."""

    state: JobState
    attempts: int = 0
    ambiguous: int = 0
    request_id: str | None = None
    result: dict[str, Any] | None = None
    outputs: tuple[str, ...] = ()
    paid: int = 0  # attempts fal accepted or may have (pending, accepted, ambiguous)
    zero_billed: int = 0  # of those, attempts fal reported 0 billable units for


@dataclass
class Seen:
    """The highest counters observed so far, per job."""

    attempts: dict[str, int] = field(default_factory=dict)
    ambiguous: dict[str, int] = field(default_factory=dict)


class _Boom(Exception):
    """An op that fails part way through a batch."""


def _boom(conn: sqlite3.Connection) -> None:
    raise _Boom("the op failed after earlier ops of its batch ran")


class JobStateMachine(RuleBasedStateMachine):
    """Random legal event sequences, illegal attempts and crashes over a real state file."""

    def __init__(self) -> None:
        super().__init__()
        # On tmpfs where there is one: the properties are SQLite's and ours, not the disk's,
        # and an fsync there costs nothing.
        shm = Path("/dev/shm")
        where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
        self.dir = Path(tempfile.mkdtemp(prefix="raybatch-sm-", dir=where))
        self.path = self.dir / "state.db"
        self.store = StateStore.open(self.path)
        self.store.execute_batch([Transitions.add_plan([_spec(k) for k in KEYS], "plan")])
        self.model = {k: Job(S.BLOCKED if k in PARENTS else S.PENDING) for k in KEYS}
        self.seen = Seen()
        self.requests = 0

    def teardown(self) -> None:
        """Close the store and remove its directory."""
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------

    def apply(self, key: str, op: Op, **changes: Any) -> None:
        """Commit ``op`` as the writer would (it must be legal), and move the model."""
        (refused,) = self.store.execute_batch([op])
        assert refused is None, refused
        self.model[key] = replace(self.model[key], **changes)

    def pick(self, data: st.DataObject, *states: JobState, remote: bool = True) -> str:
        """A job (drawn by Hypothesis) among those in ``states``."""
        found = [
            k
            for k in KEYS
            if self.model[k].state in states and (k in REMOTE or not remote or k == "s")
        ]
        return data.draw(st.sampled_from(found))

    def remote_in(self, *states: JobState) -> bool:
        """Whether some remote job is in one of ``states``."""
        return any(self.model[k].state in states for k in REMOTE)

    def parents_done(self, key: str) -> bool:
        """Whether every parent of ``key`` is done."""
        return all(self.model[p].state is S.DONE for p in PARENTS.get(key, ()))

    # -- remote requests ------------------------------------------------------------------

    @precondition(lambda self: self.remote_in(S.PENDING))
    @rule(data=st.data())
    def intent(self, data: st.DataObject) -> None:
        """Before a POST: the job is submitting its next attempt (paid until refused)."""
        key = data.draw(st.sampled_from([k for k in REMOTE if self.model[k].state is S.PENDING]))
        job = self.model[key]
        attempt = job.attempts + 1
        self.apply(
            key,
            Transitions.intent(key, attempt, COST),
            state=S.SUBMITTING,
            attempts=attempt,
            paid=job.paid + 1,
        )

    @precondition(lambda self: self.remote_in(S.SUBMITTING))
    @rule(data=st.data())
    def unsent(self, data: st.DataObject) -> None:
        """fal refused the POST outright: pending again, nothing billed."""
        key = self.pick(data, S.SUBMITTING)
        job = self.model[key]
        # The next intent reuses the attempt number: its row replaces the refused one.
        changes = {"state": S.PENDING, "paid": job.paid - 1, "attempts": job.attempts - 1}
        self.apply(key, Transitions.unsent(key), **changes)

    @precondition(lambda self: self.remote_in(S.SUBMITTING))
    @rule(data=st.data())
    def submitted(self, data: st.DataObject) -> None:
        """fal accepted the POST: the request id is recorded."""
        key = self.pick(data, S.SUBMITTING)
        self.requests += 1
        rid = f"req-{self.requests}"
        op = Transitions.submitted(key, rid, f"s/{rid}", f"r/{rid}", f"c/{rid}")
        self.apply(key, op, state=S.QUEUED, request_id=rid)

    @precondition(lambda self: self.remote_in(S.QUEUED))
    @rule(data=st.data())
    def running(self, data: st.DataObject) -> None:
        """fal reports IN_PROGRESS."""
        key = self.pick(data, S.QUEUED)
        self.apply(key, Transitions.running(key), state=S.RUNNING)

    @precondition(lambda self: self.remote_in(S.RUNNING))
    @rule(data=st.data())
    def queued_again(self, data: st.DataObject) -> None:
        """fal moved a running request back to its queue."""
        key = self.pick(data, S.RUNNING)
        self.apply(key, Transitions.queued_again(key), state=S.QUEUED)

    @precondition(lambda self: self.remote_in(S.QUEUED, S.RUNNING))
    @rule(data=st.data(), units=st.sampled_from([None, 0.0, 5.0]))
    def completed(self, data: st.DataObject, units: float | None) -> None:
        """The result is fetched and kept (with the billable units fal reported)."""
        key = self.pick(data, S.QUEUED, S.RUNNING)
        result = {"video": {"url": f"http://cdn/{key}.mp4", "file_size": 10}}
        job = self.model[key]
        self.apply(
            key,
            Transitions.completed(key, result, units),
            state=S.COMPLETED,
            result=result,
            zero_billed=job.zero_billed + (units == 0.0),
        )

    @precondition(lambda self: self.remote_in(S.QUEUED, S.RUNNING, S.COMPLETED))
    @rule(data=st.data())
    def resubmit(self, data: st.DataObject) -> None:
        """The policy asks for a new paid request: the old one is dropped, still paid."""
        key = self.pick(data, S.QUEUED, S.RUNNING, S.COMPLETED)
        changes = {"state": S.PENDING, "request_id": None, "result": None}
        self.apply(key, Transitions.resubmit(key, ERROR), **changes)

    @precondition(lambda self: self.remote_in(S.SUBMITTING))
    @rule(data=st.data(), resubmit=st.booleans())
    def ambiguous(self, data: st.DataObject, resubmit: bool) -> None:
        """A submit whose answer was lost (or found after a crash): counted, then per policy."""
        key = self.pick(data, S.SUBMITTING)
        self.apply(
            key,
            Transitions.ambiguous(key, resubmit=resubmit),
            state=S.PENDING if resubmit else S.FAILED,
            ambiguous=self.model[key].ambiguous + 1,
        )

    # -- the graph ------------------------------------------------------------------------

    @precondition(
        lambda self: any(self.model[k].state is S.BLOCKED and self.parents_done(k) for k in PARENTS)
    )
    @rule(data=st.data())
    def unblock(self, data: st.DataObject) -> None:
        """Every parent is done: the child may start."""
        ready = [k for k in PARENTS if self.model[k].state is S.BLOCKED and self.parents_done(k)]
        key = data.draw(st.sampled_from(ready))
        self.apply(key, Transitions.unblock(key), state=S.PENDING)

    @precondition(lambda self: self.model["s"].state is S.PENDING)
    @rule()
    def local_step_done(self) -> None:
        """The local step wrote its output."""
        output = OutputFile("s", "0" * 64, 10, "", "file")
        self.apply("s", Transitions.done("s", [output]), state=S.DONE, outputs=("s",))

    @precondition(
        lambda self: any(
            self.model[k].state is S.BLOCKED
            and any(self.model[p].state in (S.FAILED, S.CANCELLED) for p in PARENTS[k])
            for k in PARENTS
        )
    )
    @rule(data=st.data())
    def blocked_by(self, data: st.DataObject) -> None:
        """A parent failed: the child fails, blocked by it."""
        victims = [
            k
            for k in PARENTS
            if self.model[k].state is S.BLOCKED
            and any(self.model[p].state in (S.FAILED, S.CANCELLED) for p in PARENTS[k])
        ]
        key = data.draw(st.sampled_from(victims))
        self.apply(key, Transitions.blocked_by(key, "a parent"), state=S.FAILED)

    # -- any job --------------------------------------------------------------------------

    @precondition(lambda self: self.remote_in(S.COMPLETED))
    @rule(data=st.data())
    def done(self, data: st.DataObject) -> None:
        """Every output verified and renamed into place."""
        key = self.pick(data, S.COMPLETED)
        output = OutputFile(f"{key}.mp4", "0" * 64, 10, f"http://cdn/{key}.mp4", "video")
        self.apply(key, Transitions.done(key, [output]), state=S.DONE, outputs=(output.path,))

    @precondition(lambda self: any(not j.state.finished for j in self.model.values()))
    @rule(data=st.data())
    def failed(self, data: st.DataObject) -> None:
        """The job cannot succeed; a fetched result and request stay recorded."""
        key = data.draw(st.sampled_from([k for k in KEYS if not self.model[k].state.finished]))
        self.apply(key, Transitions.failed(key, FAILURE), state=S.FAILED)

    @precondition(lambda self: self.remote_in(S.QUEUED, S.RUNNING, S.PENDING))
    @rule(data=st.data())
    def cancelled(self, data: st.DataObject) -> None:
        """``raybatch cancel``."""
        key = self.pick(data, S.QUEUED, S.RUNNING, S.PENDING)
        self.apply(key, Transitions.cancelled(key, "cancelled by the user"), state=S.CANCELLED)

    @precondition(lambda self: any(j.state in (S.FAILED, S.CANCELLED) for j in self.model.values()))
    @rule(data=st.data())
    def reset(self, data: st.DataObject) -> None:
        """``--retry-failed``: where the policy would put the job."""
        key = data.draw(
            st.sampled_from([k for k in KEYS if self.model[k].state in (S.FAILED, S.CANCELLED)])
        )
        job = self.model[key]
        if key in PARENTS and not self.parents_done(key):
            self.apply(key, Transitions.reset(key, S.BLOCKED), state=S.BLOCKED, request_id=None,
                       result=None)  # fmt: skip
        elif job.result is not None:
            self.apply(key, Transitions.reset(key, S.COMPLETED), state=S.COMPLETED)
        elif job.request_id is not None:
            self.apply(key, Transitions.reset(key, S.QUEUED), state=S.QUEUED)
        else:
            self.apply(key, Transitions.reset(key, S.PENDING), state=S.PENDING)

    @rule(
        key=st.sampled_from(KEYS),
        which=st.sampled_from(["running", "done", "unsent", "unblock", "intent", "completed"]),
    )
    def any_transition(self, key: str, which: str) -> None:
        """An arbitrary transition commits only where it is legal; else it raises and
        changes nothing."""
        job = self.model[key]
        output = OutputFile(key, "0" * 64, 10, "", "file")
        ops: dict[str, tuple[Op, bool]] = {
            "running": (Transitions.running(key), job.state is S.QUEUED),
            "done": (
                Transitions.done(key, [output]),
                job.state is S.COMPLETED or (key == "s" and job.state is S.PENDING),
            ),
            "unsent": (Transitions.unsent(key), job.state is S.SUBMITTING),
            "unblock": (
                Transitions.unblock(key),
                job.state is S.BLOCKED and self.parents_done(key),
            ),
            "intent": (Transitions.intent(key, job.attempts + 1, COST), job.state is S.PENDING),
            "completed": (
                Transitions.completed(key, {"x": 1}, None),
                job.state in (S.QUEUED, S.RUNNING),
            ),
        }
        op, legal = ops[which]
        if legal:
            return  # the legal ones are the rules above; only refusals are checked here
        before = self.store.row(key)
        (refused,) = self.store.execute_batch([op])
        assert isinstance(refused, IllegalTransition), (key, which, job)
        assert self.store.row(key) == before

    # -- crashes -------------------------------------------------------------------------

    @rule()
    def crash(self) -> None:
        """SIGKILL between transactions: the connection goes away, the file is reopened."""
        self.store.close()
        self.store = StateStore.open(self.path)

    @rule(key=st.sampled_from(KEYS))
    def kill_mid_transaction(self, key: str) -> None:
        """SIGKILL inside a transaction: written but never committed, so never happened."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE jobs SET state = 'failed', attempts = 0 WHERE key = ?", (key,))
        conn.execute("DELETE FROM attempts WHERE key = ?", (key,))
        conn.close()
        self.store.close()
        self.store = StateStore.open(self.path)

    @rule(key=st.sampled_from(KEYS), other=st.sampled_from(KEYS))
    def torn_batch(self, key: str, other: str) -> None:
        """A batch whose last op raises leaves every job as it was (all or nothing)."""
        ops: list[Op] = [
            Transitions.failed(key, FAILURE),
            Transitions.cancelled(other, "x"),
            _boom,
        ]
        with pytest.raises(_Boom):
            self.store.execute_batch(ops)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def store_equals_model(self) -> None:
        """The state file says exactly what the model expects, job by job."""
        rows = {row.key: row for row in self.store.rows()}
        assert set(rows) == set(KEYS)
        for key, job in self.model.items():
            row = rows[key]
            seen = (row.state, row.attempts, row.ambiguous, row.request_id, row.result)
            assert seen == (job.state, job.attempts, job.ambiguous, job.request_id, job.result)
            if job.state is S.DONE:
                assert tuple(o["path"] for o in row.outputs) == job.outputs

    @invariant()
    def spend_is_every_paid_attempt(self) -> None:
        """Spend is the cost of every attempt fal accepted or may have (less those it billed
        nothing for), whatever became of the job."""
        paid = sum(j.paid - j.zero_billed for j in self.model.values())
        spend = self.store.spend()
        assert spend.usd == pytest.approx(paid * COST)
        # Paid again: every paid attempt beyond a job's first, whichever attempt it was.
        assert spend.resubmitted == sum(max(j.paid - 1, 0) for j in self.model.values())

    @invariant()
    def graph_is_respected(self) -> None:
        """A job that started has every parent done; a blocked one waits on some parent."""
        for key in PARENTS:
            state = self.model[key].state
            if state in (S.SUBMITTING, S.QUEUED, S.RUNNING, S.COMPLETED, S.DONE):
                assert self.parents_done(key), (key, state)

    @invariant()
    def request_id_exactly_where_a_request_exists(self) -> None:
        """No request id before a submit is recorded; always one from queued to completed,
        and wherever a result is kept."""
        for row in self.store.rows():
            if row.state in (S.PENDING, S.SUBMITTING, S.BLOCKED):
                assert row.request_id is None, row
            if row.state in (S.QUEUED, S.RUNNING, S.COMPLETED):
                assert row.request_id is not None, row
            if row.result is not None:
                assert row.request_id is not None, row
            if row.state is S.COMPLETED:
                assert row.result is not None, row

    @invariant()
    def counters_never_go_down(self) -> None:
        """Attempts and ambiguous submits only ever grow."""
        for row in self.store.rows():
            assert row.ambiguous >= self.seen.ambiguous.get(row.key, 0), row
            self.seen.ambiguous[row.key] = row.ambiguous

    @invariant()
    def state_file_is_intact(self) -> None:
        """SQLite's own check passes after every step, crashes included."""
        assert self.store.spend().paid_attempts >= 0  # a read through the public surface
        conn = sqlite3.connect(self.path)
        try:
            assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        finally:
            conn.close()


JobStateMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJobStateMachine = JobStateMachine.TestCase
TestJobStateMachine.__doc__ = (
    "Random event sequences, illegal transitions and crashes never reach an inconsistent state."
)
