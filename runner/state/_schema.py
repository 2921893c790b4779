"""The state file's tables, and the version they are at."""

from __future__ import annotations

SCHEMA_VERSION = 1
LAST_PLAN = "last_plan"  # meta key: fingerprint of the plan add_jobs last wrote

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    clip TEXT,
    prompt TEXT,
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
CREATE TABLE IF NOT EXISTS attempts (
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    request_id TEXT,
    intent_at REAL NOT NULL,
    submitted_at REAL,
    ended_at REAL,
    outcome TEXT,
    PRIMARY KEY (key, attempt)
);
"""
