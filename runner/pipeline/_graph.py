"""The jobs of a run as a graph: who waits for whom, and which ready job goes next.

A job whose parents are not all done waits (``blocked``) and holds nothing. Among ready
jobs, the one with the longest remaining chain goes first (its own estimated work plus
its longest chain of descendants): a long clip's first segment under chain continuity
starts before a one-segment clip, so the batch does not end waiting on one long chain.
Equal remaining chains are common (every 10 s segment weighs the same), so a tie goes to
the job with the heaviest chain of work *before* it: the longer whole path. A long clip's
last render and a short clip's last render both have one render left, but only the long
clip's has waited its whole chain to get there; plan order would otherwise decide, and
put the clip listed last behind the others. Local steps and remote requests have a ready
queue each, since each has its own limit.

A job may also wait for a *verdict*: with ``gate: looks`` a render waits until a person
approves its look (``JobSpec.gates``), holding nothing either. It is ready once every
parent is done and every gating parent approved; an approval taken back before it
started puts it back to wait.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Collection, Iterable, Mapping, Sequence

from ..job import LOCAL_ENDPOINT_PREFIX
from ..plan import JobList
from ..state import JobState

#: A job's urgency, compared as a tuple: see ``Graph.rank``.
Rank = tuple[float, float]
#: A ready queue's entry: the rank negated (heapq pops the least), then the plan index.
_Entry = tuple[float, float, int]


class Graph:
    """Children, waiting parents and the ready queues of one run's jobs (by plan index)."""

    def __init__(
        self,
        jobs: JobList,
        states: Mapping[str, JobState],
        approved: Collection[str] = frozenset(),
        *,
        fifo: bool = False,
        todo: Iterable[int] | None = None,
    ) -> None:
        self._columns = jobs.columns
        self.keys: Sequence[str] = self._columns.keys
        self._index = jobs.places
        self._local: list[bool] = []
        self._fifo = fifo
        self._children: dict[int, list[int]] = {}
        #: index → parents (keys) not yet done, for every job that waits.
        self.waiting: dict[int, set[str]] = {}
        #: index → gating parents (keys) not approved, for every job that waits for them.
        self.awaiting: dict[int, set[str]] = {}
        #: gating parent key → the jobs it gates.
        self._gated: dict[str, list[int]] = {}
        self._add(range(len(self.keys)), states, approved)
        self.priority, self._depth = self._priorities()
        self._ready: tuple[list[_Entry], list[_Entry]] = ([], [])
        #: Jobs in a ready queue (one taken back for a verdict stays in the heap, skipped).
        self._queued: set[int] = set()
        #: Jobs this run may still start (``todo``, else every job; see ``track``).
        self.todo: set[int] = set()
        self.track(range(len(self.keys)) if todo is None else todo)

    def _add(
        self, indices: range, states: Mapping[str, JobState], approved: Collection[str]
    ) -> None:
        columns = self._columns
        ends = columns.endpoints[indices.start :]
        self._local.extend(e.startswith(LOCAL_ENDPOINT_PREFIX) for e in ends)
        for i in indices:
            for parent in columns.parents[i]:
                if states.get(parent) is not JobState.DONE:
                    self.waiting.setdefault(i, set()).add(parent)
                p = self._index.get(parent)
                if p is not None:
                    self._children.setdefault(p, []).append(i)
            for gate in columns.gates[i] if columns.gates else ():
                self._gated.setdefault(gate, []).append(i)
                if gate not in approved:
                    self.awaiting.setdefault(i, set()).add(gate)

    def extend(
        self, start: int, states: Mapping[str, JobState], approved: Collection[str]
    ) -> list[int]:
        """Jobs appended to the run's list from ``start`` on (a reroll's new take) join
        the graph; returns those that may start now."""
        new = range(start, len(self.keys))
        self._add(new, states, approved)
        for name in ("chained", "_parents"):  # computed for the graph before it grew
            self.__dict__.pop(name, None)
        self.priority, self._depth = self._priorities()
        self.todo.update(new)
        return [i for i in new if i not in self.waiting and i not in self.awaiting]

    def _priorities(self) -> tuple[list[float], list[float]]:
        """Each job's priority, its remaining chain, and what breaks a tie, the heaviest
        chain that ends with it; (FIFO, for comparison only) neither."""
        if self._fifo:
            return [0.0] * len(self.keys), [0.0] * len(self.keys)
        weights = self._columns.weights
        if not self._children:  # no job waits for another: each chain is the job alone
            return list(weights), list(weights)
        parents = {i: found for i, found in enumerate(self._parents) if found}
        return _chain_lengths(weights, self._children), _chain_lengths(weights, parents)

    def rank(self, i: int) -> Rank:
        """How urgent job ``i`` is: its remaining chain, then the chain that led to it
        (the greater goes first)."""
        return self.priority[i], self._depth[i]

    def track(self, todo: Iterable[int]) -> None:
        """Only jobs ``todo`` are this run's to start: the others (finished, or already at
        fal) wait for nothing."""
        self.todo = set(todo)
        self.awaiting = {i: gates for i, gates in self.awaiting.items() if i in self.todo}

    @functools.cached_property
    def chained(self) -> bool:
        """Whether some remote job waits on another remote job's output (directly or
        through local steps): a chain, whose links must not queue at fal."""
        if not self._children:
            return False
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
            if child in self.awaiting:
                continue  # it waits for a person: a place kept for it could wait for hours
            waiting = self.waiting.get(child, set())
            others = (self._index.get(key) for key in waiting if key != self.keys[i])
            if any(j is None or not self._local[j] for j in others):
                continue  # it waits for another remote job too
            if best is None or self.rank(child) > self.rank(best):
                best = child
        return best

    def top_rank(self, local: bool) -> Rank | None:
        """The rank of the most urgent queued job of that kind (None: none queued)."""
        if not self.has_ready(local):
            return None
        return self.rank(self._ready[local][0][2])

    def index(self, key: str) -> int | None:
        """The plan index of ``key``, if it is one of this run's jobs."""
        return self._index.get(key)

    def is_local(self, i: int) -> bool:
        """Whether job ``i`` is a local step."""
        return self._local[i]

    def add_ready(self, indices: Iterable[int]) -> None:
        """Queue jobs that may start now."""
        new = [i for i in indices if i not in self._queued]
        self._queued.update(new)
        # One negated float per distinct rank, shared by the entries (not two per entry).
        negated: dict[float, float] = {}
        priority, depth = self.priority, self._depth
        for local, queue in ((False, self._ready[0]), (True, self._ready[1])):
            entries = [
                (
                    negated.setdefault(priority[i], -priority[i]),
                    negated.setdefault(depth[i], -depth[i]),
                    i,
                )
                for i in new
                if self._local[i] is local
            ]
            if len(entries) > len(queue) // 4:
                queue.extend(entries)  # many at once (a run's start): one O(n) heapify
                heapq.heapify(queue)
            else:
                for entry in entries:
                    heapq.heappush(queue, entry)

    def has_ready(self, local: bool) -> bool:
        """Whether a job of that kind is queued."""
        queue = self._ready[local]
        while queue and queue[0][2] not in self._queued:
            heapq.heappop(queue)  # taken back to wait for a verdict
        return bool(queue)

    def pop_ready(self, local: bool) -> int:
        """The queued job of that kind with the highest rank (plan order breaks ties)."""
        while True:
            i = heapq.heappop(self._ready[local])[2]
            if i in self._queued:
                self._queued.discard(i)
                self.todo.discard(i)
                return i

    def clear_ready(self) -> list[int]:
        """Drop every queued job (the run stops starting work); returns them."""
        dropped = [e[2] for queue in self._ready for e in queue if e[2] in self._queued]
        for queue in self._ready:
            queue.clear()
        self._queued.clear()
        return dropped

    def discard(self, indices: Iterable[int]) -> None:
        """Forget jobs that will not run (cancelled): out of the ready queues and of the
        waiting ones (their children are failed by the caller, see :meth:`failed`)."""
        gone = set(indices)
        for queue in self._ready:
            kept = [entry for entry in queue if entry[2] not in gone]
            if len(kept) != len(queue):
                queue[:] = kept
                heapq.heapify(queue)
        for i in gone:
            self.waiting.pop(i, None)

    def done(self, key: str) -> list[int]:
        """``key`` is done: the children that now have every parent done and are not
        waiting for a verdict."""
        i = self._index.get(key)
        ready = []
        for child in self._children.get(i, ()) if i is not None else ():
            parents = self.waiting.get(child)
            if parents is None:
                continue
            parents.discard(key)
            if not parents:
                del self.waiting[child]
                if child not in self.awaiting:
                    ready.append(child)
        return ready

    def approved(self, key: str) -> list[int]:
        """A person approved ``key``'s output: the jobs it gated that may now start."""
        ready = []
        for child in self._gated.get(key, ()):
            gates = self.awaiting.get(child)
            if gates is None or key not in gates:
                continue
            gates.discard(key)
            if not gates:
                del self.awaiting[child]
                if child not in self.waiting:
                    ready.append(child)
        return ready

    def unapproved(self, key: str) -> list[int]:
        """``key``'s approval was taken back (rejected, or cleared): the jobs it gates wait
        again, unless they already started; returns those taken back from a ready queue."""
        taken = []
        for child in self._gated.get(key, ()):
            if child not in self.todo:
                continue  # started, or finished: too late to hold it back
            self.awaiting.setdefault(child, set()).add(key)
            if child in self._queued:
                self._queued.discard(child)
                taken.append(child)
        return taken

    def below(self, indices: Iterable[int]) -> list[int]:
        """``indices`` and every job of this run that waits for one of them, directly or
        not (a stitch waiting for renders that wait for a verdict)."""
        found: list[int] = []
        seen: set[int] = set()
        stack = list(indices)
        while stack:
            i = stack.pop()
            if i in seen:
                continue
            seen.add(i)
            found.append(i)
            stack.extend(c for c in self._children.get(i, ()) if c in self.waiting)
        return sorted(found)

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
            self.awaiting.pop(child, None)
            self.todo.discard(child)
            stack.extend(reversed(self._children.get(child, [])))
        return found


def _chain_lengths(weights: Sequence[float], children: Mapping[int, list[int]]) -> list[float]:
    """Each job's own weight plus its heaviest chain through ``children`` (descendants;
    given each job's parents instead, ancestors). Iterative: a chain of thousands of
    segments must not hit the recursion limit."""
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
