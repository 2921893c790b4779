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
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

SCHEMA_VERSION = 2
#: meta key: identity (manifest, code and every job key) of the plan ``add_plan`` last wrote.
LAST_PLAN = "last_plan"
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

#: The whole schema of a new state file.
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    + _JOBS
    + _ATTEMPTS
    + _EDGES
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


#: ``MIGRATIONS[n]`` takes a file from version ``n`` to ``n + 1``.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2}
