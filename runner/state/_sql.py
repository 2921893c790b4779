"""SQLite failures as the fatal errors the CLI knows how to report."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from ..errors import DiskError, StateError


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn SQLite and OS failures into the fatal errors the CLI knows how to report."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "disk" in text or "full" in text or "I/O" in text:
            raise DiskError(f"cannot write the state file: {text}") from exc
        raise StateError(f"state file error: {text}") from exc
    except sqlite3.DatabaseError as exc:
        raise StateError(f"the state file is damaged: {exc}") from exc
    except OSError as exc:
        raise DiskError(f"cannot write the state file: {exc.strerror or exc}") from exc
