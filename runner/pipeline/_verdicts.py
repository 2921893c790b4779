"""Verdicts as the engine sees them: which gating parents are approved, and what people
decided while the run goes on.

A person approves looks in ``raybatch review``, another process: its server writes each
verdict to ``state.db`` through its own writer, and a run notices by polling. The poll is
one statement on a read-only connection (the largest verdict id and the reroll count,
both index lookups), every ``RunOptions.verdict_poll`` seconds (2 by default), and only
while some job waits for a verdict; when they change, the new verdicts are read by id.
SQLite gives no cross-process notification, and a file watch on a WAL fires for every
write of the run itself; two seconds is well under the time a person takes to look.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..state import APPROVED, REJECTED, StateStore, VerdictMark
from ._graph import Graph


class VerdictWatch:
    """The verdicts of one run's gating parents, kept current by :meth:`poll`."""

    def __init__(self, path: Path) -> None:
        reader = StateStore.open_readonly(path)
        assert reader is not None, "a run opens its state before it starts"
        #: A read-only connection of the run's own (the writer's is busy in its thread).
        self.reader = reader
        # The mark first: a verdict given between the two reads is read again, harmlessly.
        self._mark: VerdictMark = reader.verdict_mark()
        self._last = self._mark.last_verdict
        #: key → current verdict, for every job that has one.
        self.verdicts = {
            key: j.verdict for key, j in reader.judgements().items() if j.verdict is not None
        }
        self.rerolls_seen = self._mark.rerolls

    def approved(self) -> set[str]:
        """Keys whose output is approved now."""
        return {key for key, verdict in self.verdicts.items() if verdict == APPROVED}

    def poll(self, graph: Graph) -> tuple[list[int], list[int], bool]:
        """Apply verdicts given since the last poll to ``graph``: (jobs that may start now,
        jobs taken back from a ready queue, whether a reroll was asked for)."""
        mark = self.reader.verdict_mark()
        if mark == self._mark:
            return [], [], False
        ready: list[int] = []
        taken: list[int] = []
        for last, key, verdict in self.reader.verdicts_since(self._last):
            self._last = last
            if verdict is None:
                self.verdicts.pop(key, None)
            else:
                self.verdicts[key] = verdict
            if verdict == APPROVED:
                ready.extend(graph.approved(key))
            else:
                taken.extend(graph.unapproved(key))
        rerolled = mark.rerolls != self._mark.rerolls
        self._mark = mark
        # Approved then taken back within one poll: it waits, and was never queued.
        ready = [i for i in ready if i not in graph.awaiting and i not in graph.waiting]
        return ready, [i for i in taken if i in graph.awaiting], rerolled

    def awaits_judgement(self, graph: Graph) -> bool:
        """Whether some job waits for a look nobody has rejected yet (one still to judge,
        or still to render)."""
        return any(
            any(self.verdicts.get(key) != REJECTED for key in gates)
            for gates in graph.awaiting.values()
        )

    def split(self, graph: Graph) -> tuple[list[int], list[int]]:
        """The jobs held for a verdict: (waiting for one, held by a rejection), each with
        the jobs below it that wait for it."""
        to_judge: list[int] = []
        held: list[int] = []
        for i, gates in graph.awaiting.items():
            rejected = any(self.verdicts.get(key) == REJECTED for key in gates)
            (held if rejected else to_judge).append(i)
        return graph.below(to_judge), graph.below(held)

    def close(self) -> None:
        """Close the read-only connection."""
        self.reader.close()


def held_cost(indices: Sequence[int], costs: Sequence[float | None]) -> float:
    """Estimated USD of the jobs at ``indices``."""
    return round(sum(costs[i] or 0.0 for i in indices), 6)
