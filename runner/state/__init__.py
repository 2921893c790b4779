"""The state file: one SQLite database (WAL) beside the outputs, and its only writer.

Every transition of every job is written here before the rest of the program acts on
it. Two orderings carry the whole crash-safety argument:

* the submit *intent* is committed before the POST and the ``request_id`` right after
  it, so a restart re-attaches to requests instead of paying for them again, and a job
  found in ``submitting`` is known to be *ambiguous* (the POST may or may not have
  reached fal);
* ``done`` is committed only after every output file is verified and renamed into
  place (see ``download.py``), so ``done`` never names a file that is not there.

Writes go through :class:`StateWriter`, which batches whatever transitions are waiting
into one transaction (group commit) and acknowledges each only after its commit: at
100 transitions per commit SQLite does ~80k/s here, against ~4k/s one by one.
"""

from ._lock import DirectoryLock
from ._rows import (
    IN_FLIGHT,
    TERMINAL,
    ErrorInfo,
    JobRow,
    JobState,
    JobTally,
    OutputFile,
    PlanSnapshot,
    Unfinished,
)
from ._schema import SCHEMA_VERSION
from ._store import StateStore
from ._transitions import Transitions
from ._writer import StateWriter

__all__ = (
    "IN_FLIGHT",
    "SCHEMA_VERSION",
    "TERMINAL",
    "DirectoryLock",
    "ErrorInfo",
    "JobRow",
    "JobState",
    "JobTally",
    "OutputFile",
    "PlanSnapshot",
    "StateStore",
    "StateWriter",
    "Transitions",
    "Unfinished",
)
