"""The jobs of a run as a graph: who waits for whom, and which ready job goes next.

A job whose parents are not all done waits (``blocked``) and holds nothing. Among ready
jobs, the one with the longest remaining chain goes first (its own estimated work plus
its longest chain of descendants): a long clip's first segment under chain continuity
starts before a one-segment clip, so the batch does not end waiting on one long chain.
Local steps and remote requests have a ready queue each, since each has its own limit.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence

from ..job import LOCAL_ENDPOINT_PREFIX
from ..plan import JobList
from ..state import JobState


class Graph:
    """Children, waiting parents and the ready queues of one run's jobs (by plan index)."""

    def __init__(self, jobs: JobList, states: Mapping[str, JobState]) -> None:
        columns = jobs.columns
        self.keys: Sequence[str] = columns.keys
        self._index = {key: i for i, key in enumerate(self.keys)}
        self._local = [e.startswith(LOCAL_ENDPOINT_PREFIX) for e in columns.endpoints]
        self._children: dict[int, list[int]] = {}
        #: index → parents (keys) not yet done, for every job that waits.
        self.waiting: dict[int, set[str]] = {}
        for i, parents in enumerate(columns.parents):
            for parent in parents:
                if states.get(parent) is not JobState.DONE:
                    self.waiting.setdefault(i, set()).add(parent)
                p = self._index.get(parent)
                if p is not None:
                    self._children.setdefault(p, []).append(i)
        self.priority = _chain_lengths(columns.weights, self._children)
        self._ready: tuple[list[tuple[float, int]], list[tuple[float, int]]] = ([], [])

    def index(self, key: str) -> int | None:
        """The plan index of ``key``, if it is one of this run's jobs."""
        return self._index.get(key)

    def is_local(self, i: int) -> bool:
        """Whether job ``i`` is a local step."""
        return self._local[i]

    def add_ready(self, indices: Iterable[int]) -> None:
        """Queue jobs that may start now."""
        for i in indices:
            heapq.heappush(self._ready[self._local[i]], (-self.priority[i], i))

    def has_ready(self, local: bool) -> bool:
        """Whether a job of that kind is queued."""
        return bool(self._ready[local])

    def pop_ready(self, local: bool) -> int:
        """The queued job of that kind with the longest remaining chain (plan order breaks
        ties)."""
        return heapq.heappop(self._ready[local])[1]

    def clear_ready(self) -> list[int]:
        """Drop every queued job (the run stops starting work); returns them."""
        dropped = [i for queue in self._ready for _, i in queue]
        for queue in self._ready:
            queue.clear()
        return dropped

    def discard(self, indices: Iterable[int]) -> None:
        """Forget jobs that will not run (cancelled): out of the ready queues and of the
        waiting ones (their children are failed by the caller, see :meth:`failed`)."""
        gone = set(indices)
        for queue in self._ready:
            kept = [entry for entry in queue if entry[1] not in gone]
            if len(kept) != len(queue):
                queue[:] = kept
                heapq.heapify(queue)
        for i in gone:
            self.waiting.pop(i, None)

    def done(self, key: str) -> list[int]:
        """``key`` is done: the children that now have every parent done."""
        i = self._index.get(key)
        ready = []
        for child in self._children.get(i, ()) if i is not None else ():
            parents = self.waiting.get(child)
            if parents is None:
                continue
            parents.discard(key)
            if not parents:
                del self.waiting[child]
                ready.append(child)
        return ready

    def failed(self, key: str) -> list[int]:
        """``key`` failed: every job that waits on it, directly or not (each fails as
        blocked), in an order where parents come before their children."""
        i = self._index.get(key)
        if i is None:
            return []
        found: list[int] = []
        seen = {i}
        stack = list(reversed(self._children.get(i, [])))
        while stack:
            child = stack.pop()
            if child in seen or child not in self.waiting:
                continue
            seen.add(child)
            found.append(child)
            del self.waiting[child]
            stack.extend(reversed(self._children.get(child, [])))
        return found


def _chain_lengths(weights: Sequence[float], children: Mapping[int, list[int]]) -> list[float]:
    """Each job's own weight plus its heaviest chain of descendants (iterative: a chain
    of thousands of segments must not hit the recursion limit)."""
    chain = list(weights)
    if not children:
        return chain
    done: set[int] = set()
    for root in children:
        if root in done:
            continue
        stack: list[tuple[int, bool]] = [(root, False)]
        on_path: set[int] = set()
        while stack:
            node, expanded = stack.pop()
            if expanded:
                on_path.discard(node)
                below = [chain[c] for c in children.get(node, ())]
                chain[node] = weights[node] + (max(below) if below else 0.0)
                done.add(node)
                continue
            if node in done or node in on_path:
                continue  # shared descendant already measured, or a cycle (keys forbid it)
            on_path.add(node)
            stack.append((node, True))
            stack.extend((c, False) for c in children.get(node, ()) if c not in done)
    return chain
