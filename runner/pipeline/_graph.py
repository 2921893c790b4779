"""The jobs of a run as a graph: who waits for whom, and which ready job goes next.

A job whose parents are not all done waits (``blocked``) and holds nothing. Among ready
jobs, the one with the longest remaining chain goes first (its own estimated work plus
its longest chain of descendants): a long clip's first segment under chain continuity
starts before a one-segment clip, so the batch does not end waiting on one long chain.
Local steps and remote requests have a ready queue each, since each has its own limit.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterable, Mapping, Sequence

from ..job import LOCAL_ENDPOINT_PREFIX
from ..plan import JobList
from ..state import JobState


class Graph:
    """Children, waiting parents and the ready queues of one run's jobs (by plan index)."""

    def __init__(
        self, jobs: JobList, states: Mapping[str, JobState], *, fifo: bool = False
    ) -> None:
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
        # FIFO (plan order, for comparison only): every job has the same priority.
        self.priority = (
            [0.0] * len(self.keys) if fifo else _chain_lengths(columns.weights, self._children)
        )
        self._ready: tuple[list[tuple[float, int]], list[tuple[float, int]]] = ([], [])

    @functools.cached_property
    def chained(self) -> bool:
        """Whether some remote job waits on another remote job's output (directly or
        through local steps): a chain, whose links must not queue at fal."""
        parents = self._parents
        for i, mine in enumerate(parents):
            if self._local[i] or not mine:
                continue
            stack, seen = list(mine), set(mine)
            while stack:
                p = stack.pop()
                if not self._local[p]:
                    return True
                for q in parents[p]:
                    if q not in seen:
                        seen.add(q)
                        stack.append(q)
        return False

    @functools.cached_property
    def _parents(self) -> list[list[int]]:
        """Each job's parents by plan index (parents outside the plan left out)."""
        found: list[list[int]] = [[] for _ in self.keys]
        for p, children in self._children.items():
            for child in children:
                found[child].append(p)
        return found

    def heir(self, i: int) -> int | None:
        """The remote job that continues ``i``'s chain: the most urgent remote job reached
        from ``i`` through local steps only, which waits for nothing remote but ``i``.
        None when there is none."""
        best: int | None = None
        stack, seen = list(self._children.get(i, ())), set()
        while stack:
            child = stack.pop()
            if child in seen:
                continue
            seen.add(child)
            if self._local[child]:
                stack.extend(self._children.get(child, ()))
                continue
            waiting = self.waiting.get(child, set())
            others = (self._index.get(key) for key in waiting if key != self.keys[i])
            if any(j is None or not self._local[j] for j in others):
                continue  # it waits for another remote job too
            if best is None or self.priority[child] > self.priority[best]:
                best = child
        return best

    def top_priority(self, local: bool) -> float:
        """The priority of the most urgent queued job of that kind (-inf: none)."""
        queue = self._ready[local]
        return -queue[0][0] if queue else float("-inf")

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
