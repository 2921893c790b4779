"""Places at fal kept for the next link of a critical chain.

Under chain continuity a clip's renders run one after another: render k+1 can only be
submitted once render k is downloaded and its frame extracted. fal queues requests first
come, first served, so if render k's place at fal went to another job meanwhile, render
k+1 would wait for a whole render elsewhere to finish, at every link: the longest chain
would grow by about a render per link and the batch would end waiting on it.

So when a remote job gives up its place (its result fetched) and the job that continues
its chain (its *heir*, ``Graph.heir``) is more urgent than every ready remote job, the
place is kept for the heir, and the heir is started in it as soon as its local steps are
done. For the kept place to be free at fal, the run keeps no queue at fal when its graph
has chains (``Graph.chained``): at most ``concurrency`` requests, not ``concurrency`` plus
a buffer. A place kept for a job that then cannot run (a parent failed, the run stops) is
given back.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio

from ._graph import Graph
from ._remote import Hold


class Reservations:
    """Which jobs have a place kept for them, taken from the run's slot semaphore."""

    def __init__(self, graph: Graph, slots: anyio.Semaphore) -> None:
        self._graph = graph
        self._slots = slots
        self._kept: set[int] = set()

    def __len__(self) -> int:
        return len(self._kept)

    def keep_for_heir(self, i: int) -> bool:
        """Job ``i`` gives up its place: keep it for ``i``'s heir when that is the most
        urgent remote work (True: the caller must not release the place)."""
        graph = self._graph
        heir = graph.heir(i)
        if heir is None or heir in self._kept:
            return False
        top = graph.top_rank(local=False)
        if top is not None and graph.rank(heir) <= top:
            return False
        self._kept.add(heir)
        return True

    def take(self, i: int) -> bool:
        """Whether ``i`` has a kept place; it is now ``i``'s to hold."""
        if i in self._kept:
            self._kept.discard(i)
            return True
        return False

    def give_back(self, indices: list[int] | None = None) -> None:
        """Release the places kept for ``indices`` (all when None) to the run."""
        for i in list(self._kept) if indices is None else indices:
            if i in self._kept:
                self._kept.discard(i)
                self._slots.release()


class Relay(Hold):
    """A remote job's hold on its slot that, given up, may pass to the job's heir instead
    of back to the run (``hand_over`` decides, once, and says whether it took it)."""

    def __init__(self, semaphore: anyio.Semaphore, held: bool, hand_over: Callable[[], bool]):
        super().__init__(semaphore, held)
        self._hand_over = hand_over

    def release(self) -> None:
        """Give the place up: to the heir when ``hand_over`` takes it, else to the run."""
        if self.held and self._hand_over():
            self.held = False
            return
        super().release()
