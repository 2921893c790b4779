"""The state file: one SQLite database (WAL) beside the outputs, its schema and
migrations, the one list of job states, guarded transitions, the single writer and the
directory lock.

Every transition of every job is written here before the rest of the program acts on
it. Two orderings carry the whole crash-safety argument:

* the submit *intent* is committed before the POST and the ``request_id`` right after
  it, so a restart re-attaches to requests instead of paying for them again, and a job
  found in ``submitting`` is known to be *ambiguous* (the POST may or may not have
  reached fal);
* ``done`` is committed only after every output file is verified and renamed into
  place (see ``outputs``), so ``done`` never names a file that is not there.
"""

from __future__ import annotations

from ._jobstate import JobState
from ._lock import DirectoryLock
from ._mailbox import Mailbox, Request
from ._outputs import ASIDE_DIR
from ._rows import (
    PENDING_ROW,
    ErrorInfo,
    FileStamp,
    JobRow,
    JobTally,
    Op,
    OutputFile,
    ShownRow,
    Spend,
    StoredJob,
    Unfinished,
)
from ._schema import SCHEMA_VERSION
from ._store import PlanSnapshot, StateStore
from ._transitions import Transitions
from ._verdicts import APPROVED, REJECTED, VERDICTS, Judgement, VerdictMark, Verdicts
from ._writer import StateWriter, open_writer

__all__ = (
    "APPROVED",
    "ASIDE_DIR",
    "PENDING_ROW",
    "REJECTED",
    "SCHEMA_VERSION",
    "VERDICTS",
    "DirectoryLock",
    "ErrorInfo",
    "FileStamp",
    "JobRow",
    "JobState",
    "JobTally",
    "Judgement",
    "Mailbox",
    "Op",
    "OutputFile",
    "PlanSnapshot",
    "Request",
    "ShownRow",
    "Spend",
    "StateStore",
    "StateWriter",
    "StoredJob",
    "Transitions",
    "Unfinished",
    "VerdictMark",
    "Verdicts",
    "open_writer",
)
