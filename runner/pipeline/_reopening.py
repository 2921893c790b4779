"""How a run takes back done jobs whose outputs it finds missing or altered once it has
started (a part of the scheduler, kept apart for size).

A run checks the outputs other jobs read before it starts anything. The rest, most of a
big library, are checked by a worker thread beside the first submissions: a job found
damaged there is sent back (done → completed, its result kept) and fetched again in the
same run. Nothing reads those outputs, so starting before the check ends changes no
job's input. The run does not finish before the check does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import anyio
import anyio.abc

from ..plan import JobList
from ..state import JobState, StateWriter, Unfinished
from ._graph import Graph
from ._options import Controls, RunObserver
from ._remote import Progress, Remote
from ._verify import Rechecked

#: The check a run makes of the done outputs nothing else reads (see the module's text).
Recheck = Callable[[], Awaitable[Rechecked]]


class Reopens:
    """The scheduler's late output check (its state lives on the scheduler)."""

    jobs: JobList
    graph: Graph | None
    writer: StateWriter
    observer: RunObserver
    controls: Controls
    _running: int
    _rows: dict[str, Unfinished]
    _progress: dict[str, Progress]
    _download_queue: anyio.Semaphore

    # The scheduler's own methods.
    _poke: Callable[[], None]
    _spawn: Callable[[anyio.abc.TaskGroup, Remote, int, Progress, bool], None]
    _job: Callable[[str], Progress]

    def _start_recheck(self, group: anyio.abc.TaskGroup, remote: Remote, recheck: Recheck) -> None:
        """Start the check; until it ends the run counts as busy (the feeders wait)."""
        self._running += 1
        group.start_soon(self._recheck, group, remote, recheck)

    async def _recheck(self, group: anyio.abc.TaskGroup, remote: Remote, recheck: Recheck) -> None:
        try:
            found = await recheck()
            for note in found.notes:
                self.observer.on_note(note)
            if found.reopened:
                await self._reopen(group, remote, self.writer.store.unfinished(found.reopened))
        finally:
            self._running -= 1
            self._poke()

    async def _reopen(
        self, group: anyio.abc.TaskGroup, remote: Remote, rows: Mapping[str, Unfinished]
    ) -> None:
        """Jobs sent back by the check join the run: fetched again (a download place) or,
        back to pending, queued. A stopping run leaves them to the next."""
        graph = self.graph
        assert graph is not None
        for key, row in rows.items():
            i = graph.index(key)
            if i is None:
                continue
            self._rows[key] = row
            self._progress.pop(key, None)
            graph.todo.add(i)
            self.observer.on_reopened(self.jobs[i], row.state, row.error)
            if self.controls.stop_reason is not None:
                continue
            if row.state is JobState.COMPLETED:
                await self._download_queue.acquire()
                self._spawn(group, remote, i, self._job(key), False)
            else:
                graph.add_ready([i])
