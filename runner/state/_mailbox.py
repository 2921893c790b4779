"""Requests to the run that holds an output directory, from another raybatch process.

The run is the only writer of the state file, so a command that must change the state
while a run goes on (``raybatch cancel``) asks the run instead: it drops a request file in
``<output_dir>/.requests/``, addressed to the pid that holds the directory lock. The run
looks there a few times a second, claims a request by renaming it (so a request is
either taken once or withdrawn by its sender, never both), acts on it through its single
writer and writes the answer beside it. A request addressed to another pid was meant for
a run that has ended: the run removes it unread. Every file is written whole, then
renamed into place, owner-only.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where requests and answers live, under the output directory.
REQUEST_DIR = ".requests"


@dataclass(frozen=True)
class Request:
    """One request taken from the mailbox."""

    ticket: str
    kind: str
    body: dict[str, Any]


class Mailbox:
    """The request files of one output directory (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / REQUEST_DIR

    def post(self, to_pid: int, kind: str, body: dict[str, Any]) -> str:
        """Leave a request for the run with pid ``to_pid``; returns its ticket."""
        ticket = f"{to_pid}-{uuid.uuid4().hex}"
        self._write(f"{ticket}.json", {"kind": kind, "body": body})
        return ticket

    def take(self, pid: int) -> list[Request]:
        """Claim every request addressed to ``pid`` (the caller, holding the lock), and
        remove those addressed to anyone else."""
        try:
            names = sorted(os.listdir(self.path))
        except FileNotFoundError:
            return []
        taken = []
        for name in names:
            ticket, dot, ext = name.partition(".")
            if ext != "json":
                continue
            if not ticket.startswith(f"{pid}-"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path / name)
                continue
            claimed = self.path / f"{ticket}.taken"
            try:
                os.rename(self.path / name, claimed)
                data = json.loads(claimed.read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue  # withdrawn by its sender just now
            except (OSError, ValueError):
                self.answer(ticket, {"error": "the request could not be read"})
                continue
            taken.append(Request(ticket, str(data.get("kind")), dict(data.get("body") or {})))
        return taken

    def answer(self, ticket: str, body: dict[str, Any]) -> None:
        """Answer a taken request."""
        self._write(f"{ticket}.answer", body)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path / f"{ticket}.taken")

    def answered(self, ticket: str) -> dict[str, Any] | None:
        """The answer to ``ticket`` (read once: it is removed), or None if there is none yet."""
        path = self.path / f"{ticket}.answer"
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        os.unlink(path)
        return data

    def waiting(self, ticket: str) -> bool:
        """Whether the request is still there, not yet taken."""
        return (self.path / f"{ticket}.json").exists()

    def taken(self, ticket: str) -> bool:
        """Whether the run took the request and has not answered yet."""
        return (self.path / f"{ticket}.taken").exists()

    def withdraw(self, ticket: str) -> bool:
        """Take back a request not yet taken; False if the run took it (or it is gone)."""
        try:
            os.unlink(self.path / f"{ticket}.json")
        except FileNotFoundError:
            return False
        return True

    def _write(self, name: str, data: dict[str, Any]) -> None:
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out)
        os.replace(tmp, self.path / name)
