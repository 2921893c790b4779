"""An emulator's state directory: requests, files and tokens kept in SQLite.

With ``--state-dir DIR`` (``raybatch run --local`` passes ``<output_dir>/.emulator``) the
emulator writes every change of a request, every stored file's record and every CDN token
it issues to ``DIR/state.db`` as it happens (WAL, one small transaction each), and the
files' bytes to ``DIR/files/``. A restarted emulator reads them back: a client re-attaches
to the same request ids, fetches the same results and downloads the same files; requests
that were running go on (see ``Account.restore``). ``DIR/origins.json`` records the
origins it served, which the server binds again when it can.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (key TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (token TEXT PRIMARY KEY);
"""
ORIGINS_FILE = "origins.json"


class Journal:
    """The state directory's database (one connection, used from the event loop only)."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        # check_same_thread off: the app is built in one thread and served in another,
        # but only ever used from the event loop's thread, one call at a time.
        self._db = sqlite3.connect(
            directory / "state.db", isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def save_job(self, job_id: str, record: dict[str, Any]) -> None:
        """Write one request's record, replacing any earlier one."""
        self._db.execute(
            "INSERT OR REPLACE INTO jobs (id, record) VALUES (?, ?)", (job_id, json.dumps(record))
        )

    def clear_jobs(self) -> None:
        """Forget every request."""
        self._db.execute("DELETE FROM jobs")

    def jobs(self) -> list[dict[str, Any]]:
        """Every request's record."""
        return [json.loads(r) for (r,) in self._db.execute("SELECT record FROM jobs")]

    def save_file(self, key: str, record: dict[str, Any]) -> None:
        """Write one file's record (size, sha256, content type, where its bytes are)."""
        self._db.execute(
            "INSERT OR REPLACE INTO files (key, record) VALUES (?, ?)", (key, json.dumps(record))
        )

    def clear_files(self) -> None:
        """Forget every file."""
        self._db.execute("DELETE FROM files")

    def files(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Every file's key and record."""
        for key, record in self._db.execute("SELECT key, record FROM files").fetchall():
            yield key, json.loads(record)

    def save_token(self, token: str) -> None:
        """Remember a CDN token, so that one a client cached still works after a restart."""
        self._db.execute("INSERT OR IGNORE INTO tokens (token) VALUES (?)", (token,))

    def tokens(self) -> list[str]:
        """Every CDN token issued."""
        return [t for (t,) in self._db.execute("SELECT token FROM tokens")]

    def close(self) -> None:
        """Close the database."""
        self._db.close()


def read_origins(directory: Path) -> dict[str, str]:
    """The origins a state directory's emulator served last ({} when none were recorded)."""
    try:
        data = json.loads((directory / ORIGINS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)} if isinstance(data, dict) else {}


def write_origins(directory: Path, origins: dict[str, str]) -> None:
    """Record the origins being served (written whole, then renamed into place)."""
    directory.mkdir(parents=True, exist_ok=True)
    part = directory / (ORIGINS_FILE + ".part")
    part.write_text(json.dumps(origins, indent=2) + "\n")
    part.replace(directory / ORIGINS_FILE)
