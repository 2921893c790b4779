"""The logs fal sends for a request while it runs, as one attempt keeps them."""

from __future__ import annotations

from typing import Any


class FalLogs:
    """The logs fal sent for one attempt, deduplicated and bounded.

    fal's status answers carry ``logs`` when asked with ``logs=1``, each entry
    ``{message, timestamp, level?, source?}`` (shared/reference/fal-queue-protocol.md §3,
    from fal's queue docs and its JS client types, read 2026-12-04); whether a stream event
    repeats earlier lines is not documented (the emulator repeats them), so entries are
    merged by timestamp and message. At most :data:`MAX_LOG_ENTRIES` are kept, each cut to
    :data:`MAX_LOG_MESSAGE` characters; older lines give way to newer ones, counted.
    """

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str]] = set()
        self.dropped = 0
        self.written_at = 0.0  # monotonic time of the last write to the state
        self.unwritten = False

    def merge(self, logs: list[dict[str, Any]] | None) -> bool:
        """Add the entries not seen yet; True when there were any."""
        added = False
        for entry in logs or ():
            message = str(entry.get("message", ""))[:MAX_LOG_MESSAGE]
            stamp = str(entry.get("timestamp", ""))
            if (stamp, message) in self._seen:
                continue
            self._seen.add((stamp, message))
            kept = {"message": message, "timestamp": stamp}
            if entry.get("level"):
                kept["level"] = str(entry["level"])[:16]
            self.entries.append(kept)
            added = True
        if len(self.entries) > MAX_LOG_ENTRIES:
            extra = len(self.entries) - MAX_LOG_ENTRIES
            self.dropped += extra
            del self.entries[:extra]
        self.unwritten = self.unwritten or added
        return added

    def stored(self) -> list[dict[str, Any]]:
        """What the state keeps: the entries, after a line counting those dropped."""
        if not self.dropped:
            return self.entries
        return [{"message": f"({self.dropped} earlier line(s) dropped)"}, *self.entries]


#: Log lines kept per attempt, and characters per line.
MAX_LOG_ENTRIES = 200
MAX_LOG_MESSAGE = 2000
#: While a job runs, its new log lines are written at most this often (seconds); the
#: transitions it makes anyway (running, completed) carry them too.
LOG_WRITE_EVERY = 10.0
