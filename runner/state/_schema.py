"""The state file's tables, their version, and the migrations that bring an older file
up to date.

Every state file a released raybatch wrote must keep working: an older file is copied
aside (``state.db.v<N>.bak``, with SQLite's backup API, so a WAL file is folded in) and
then migrated in place in one transaction. A file from a *newer* raybatch is refused:
its meaning is unknown here.

Versions:

1. raybatch 0.1.0 (commit 6a2e1b0): jobs and attempts.
2. the job graph: a job's kind (remote request or local step), its labels, its parents
   (``edges``); per attempt, whether fal may bill it (``billing``), its estimated cost and
   the billable units fal reported, so spend is the sum over attempts.
3. superseded jobs: ``superseded_by`` names the job that now renders to a job's output
   path (its input changed: an edited prompt); its files are kept under
   ``.superseded/<key>/``.
4. takes and verdicts: a job's take and role (``look``), its current verdict and note;
   every verdict and note given (``verdicts``), rerolls asked for (``rerolls``); edges a
   person gates (``gate``: the child waits for the parent's approval); per attempt, the
   input as sent and the logs fal sent.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

SCHEMA_VERSION = 4
#: meta key: identity (manifest, code and every job key) of the plan ``add_plan`` last wrote.
LAST_PLAN = "last_plan"
#: meta key, present from ``add_plan`` until the files of the jobs it superseded (or
#: brought back) are moved: a run killed in between finishes the moves next time.
MOVES_PENDING = "outputs_to_move"
#: meta key: the manifests run into this directory, {resolved path: name}, in first-run
#: order (results.jsonl and the review page are per manifest once there are two).
MANIFESTS = "manifests"

_JOBS = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'remote',
    clip TEXT,
    prompt TEXT,
    labels TEXT,
    output TEXT NOT NULL,
    arguments TEXT NOT NULL,
    estimated_cost REAL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    ambiguous INTEGER NOT NULL DEFAULT 0,
    request_id TEXT,
    status_url TEXT,
    response_url TEXT,
    cancel_url TEXT,
    result TEXT,
    billable_units REAL,
    outputs TEXT,
    error_kind TEXT,
    error_class TEXT,
    error_type TEXT,
    error TEXT,
    superseded_by TEXT,
    take INTEGER NOT NULL DEFAULT 1,
    role TEXT,
    verdict TEXT,
    note TEXT,
    judged_at REAL,
    created_at REAL NOT NULL,
    submitted_at REAL,
    started_at REAL,
    completed_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state);
"""

_ATTEMPTS = """
CREATE TABLE IF NOT EXISTS attempts (
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    request_id TEXT,
    intent_at REAL NOT NULL,
    submitted_at REAL,
    ended_at REAL,
    outcome TEXT,
    billing TEXT NOT NULL DEFAULT 'pending',
    cost REAL,
    billable_units REAL,
    sent TEXT,
    logs TEXT,
    PRIMARY KEY (key, attempt)
);
"""

_EDGES = """
CREATE TABLE IF NOT EXISTS edges (
    child TEXT NOT NULL,
    parent TEXT NOT NULL,
    PRIMARY KEY (child, parent)
);
CREATE INDEX IF NOT EXISTS edges_by_parent ON edges (parent);
"""

#: The edges as a new file has them: ``gate`` 1 when the child also waits for a person to
#: approve the parent's output.
_EDGES_NOW = _EDGES.replace(
    "PRIMARY KEY (child, parent)",
    "gate INTEGER NOT NULL DEFAULT 0,\n    PRIMARY KEY (child, parent)",
)

#: Every verdict ('approved', 'rejected', 'cleared') and note (verdict NULL) ever given,
#: in order: a run notices new ones by the largest id.
_VERDICTS = """
CREATE TABLE IF NOT EXISTS verdicts (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    verdict TEXT,
    note TEXT,
    at REAL NOT NULL,
    origin TEXT
);
CREATE INDEX IF NOT EXISTS verdicts_by_key ON verdicts (key);
CREATE TABLE IF NOT EXISTS rerolls (
    from_key TEXT PRIMARY KEY,
    take_group TEXT NOT NULL,
    take INTEGER NOT NULL,
    at REAL NOT NULL
);
"""

#: The whole schema of a new state file.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    + _JOBS
    + _ATTEMPTS
    + _EDGES_NOW
    + _VERDICTS
)


def run_script(conn: sqlite3.Connection, sql: str) -> None:
    """Execute ``;``-separated statements one by one (``executescript`` would COMMIT the
    transaction a migration runs in)."""
    for statement in sql.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """Add the graph and per-attempt billing; settle what each old attempt means.

    Version 1 inserted an attempt row at every submit intent and never removed it when
    fal refused the POST (a 429, a 503): such a row has no request id and no outcome and
    was never billed, unless its job is still ``submitting`` (the POST may have reached
    fal when the run stopped).
    """
    conn.execute("ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'remote'")
    conn.execute("ALTER TABLE jobs ADD COLUMN labels TEXT")
    conn.execute("ALTER TABLE attempts ADD COLUMN billing TEXT NOT NULL DEFAULT 'pending'")
    conn.execute("ALTER TABLE attempts ADD COLUMN cost REAL")
    conn.execute("ALTER TABLE attempts ADD COLUMN billable_units REAL")
    run_script(conn, _EDGES)
    conn.execute(
        "UPDATE attempts SET cost = (SELECT estimated_cost FROM jobs WHERE jobs.key = attempts.key)"
    )
    conn.execute(
        "UPDATE attempts SET billing = CASE"
        " WHEN request_id IS NOT NULL THEN 'accepted'"
        " WHEN outcome = 'ambiguous' THEN 'ambiguous'"
        " WHEN EXISTS (SELECT 1 FROM jobs WHERE jobs.key = attempts.key"
        "   AND jobs.state = 'submitting' AND jobs.attempts = attempts.attempt) THEN 'pending'"
        " ELSE 'unsent' END"
    )
    # fal's billable units were kept per job, for its last (completed) attempt.
    conn.execute(
        "UPDATE attempts SET billable_units = (SELECT billable_units FROM jobs"
        " WHERE jobs.key = attempts.key AND jobs.attempts = attempts.attempt)"
    )


def _v2_to_v3(conn: sqlite3.Connection) -> None:
    """Add ``superseded_by``. Which older job a newer one replaced is left to the next
    run: adding its plan marks every job it supersedes."""
    conn.execute("ALTER TABLE jobs ADD COLUMN superseded_by TEXT")


def _v3_to_v4(conn: sqlite3.Connection) -> None:
    """Add takes, roles, verdicts, rerolls, gated edges and per-attempt input and logs.
    Every job of an older file is a first take without a verdict, and no edge was gated."""
    for column in ("take INTEGER NOT NULL DEFAULT 1", "role TEXT", "verdict TEXT", "note TEXT",
                   "judged_at REAL"):  # fmt: skip
        conn.execute(f"ALTER TABLE jobs ADD COLUMN {column}")
    conn.execute("ALTER TABLE edges ADD COLUMN gate INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE attempts ADD COLUMN sent TEXT")
    conn.execute("ALTER TABLE attempts ADD COLUMN logs TEXT")
    run_script(conn, _VERDICTS)


#: ``MIGRATIONS[n]`` takes a file from version ``n`` to ``n + 1``.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
    3: _v3_to_v4,
}
