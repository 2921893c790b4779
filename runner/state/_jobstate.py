"""The one list of job states, and the one place that says what each state means.

A remote job moves ``blocked → pending → submitting → queued ⇄ running → completed →
done``; a local step moves ``blocked → pending → done`` and is redone whole after a
crash. Either may end ``failed`` or ``cancelled`` instead. ``uploading``, ``preparing``
and ``downloading`` are phases the engine reports while it works; they are never written
to the state file.

Every other module asks this enum, never a list of its own: which states are stored,
unfinished, in flight at fal, finished, or have a request fal accepted (or may have).
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    """Where a job is. The string values are what ``state.db`` stores."""

    BLOCKED = "blocked"
    """Waits for its parents' outputs; holds nothing."""
    PENDING = "pending"
    """Ready: a remote job has no request at fal, a local step has not run."""
    SUBMITTING = "submitting"
    """The submit intent is recorded and the POST may be under way: after a crash it is
    unknown whether fal received it (the ambiguous case)."""
    QUEUED = "queued"
    """fal accepted the request; it waits in fal's queue."""
    RUNNING = "running"
    """fal runs the request."""
    COMPLETED = "completed"
    """The result is fetched and kept; its files are not all on disk yet."""
    DONE = "done"
    """Every output is verified and under its final name."""
    FAILED = "failed"
    """Cannot succeed as it stands; the reason is kept."""
    CANCELLED = "cancelled"
    """Cancelled by the user."""

    UPLOADING = "uploading"
    """Phase (not stored): a remote job's local files are being uploaded."""
    PREPARING = "preparing"
    """Phase (not stored): a local step is working."""
    DOWNLOADING = "downloading"
    """Phase (not stored): a completed job's files are being downloaded."""

    @property
    def stored(self) -> bool:
        """Whether ``state.db`` records this state (phases are only reported)."""
        return self not in _PHASES

    @property
    def finished(self) -> bool:
        """Done, failed or cancelled: a run leaves the job alone."""
        return self in _FINISHED

    @property
    def in_flight(self) -> bool:
        """A request exists, or may exist, at fal and has no fetched result yet."""
        return self in _IN_FLIGHT

    @property
    def accepted(self) -> bool:
        """The job's current request was accepted by fal, or may have been: its estimated
        cost counts as committed in ``plan``'s "paid" column (spend itself is counted per
        attempt, see ``StateStore.spend``)."""
        return self in _ACCEPTED

    @property
    def blocked(self) -> bool:
        """Waits for other jobs."""
        return self is JobState.BLOCKED

    @classmethod
    def unfinished(cls) -> tuple[JobState, ...]:
        """The stored states a run still has work in (for SQL ``IN`` lists: only ``IN`` lets
        SQLite use the state index; ``NOT IN`` reads every row)."""
        return tuple(s for s in cls if s.stored and not s.finished)

    @classmethod
    def sql_list(cls, states: tuple[JobState, ...]) -> str:
        """``'a', 'b'`` for an SQL ``IN (...)``: the values are this enum's own literals."""
        return ", ".join(f"'{s.value}'" for s in states)


_PHASES = frozenset({JobState.UPLOADING, JobState.PREPARING, JobState.DOWNLOADING})
_FINISHED = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
_IN_FLIGHT = frozenset({JobState.SUBMITTING, JobState.QUEUED, JobState.RUNNING})
_ACCEPTED = frozenset(
    {
        JobState.SUBMITTING,
        JobState.QUEUED,
        JobState.RUNNING,
        JobState.COMPLETED,
        JobState.DOWNLOADING,
        JobState.DONE,
    }
)

#: A stored value → its state. A dict lookup: reading 100k rows, ``JobState(value)`` (the
#: enum's own lookup) cost a tenth of a second.
STORED_STATES: dict[str, JobState] = {s.value: s for s in JobState if s.stored}
