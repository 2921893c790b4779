"""How a run follows verdicts given while it goes on (a part of the scheduler, kept apart
for size): it polls for them while jobs wait for one, lets approved jobs go, takes back
an approval withdrawn before its job started, takes on the new takes of a reroll, and
with ``--wait-for-verdicts`` keeps the run alive while a look is left to judge."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio

from ..errors import IllegalTransition
from ..job import JobSpec
from ..plan import JobList
from ..state import PENDING_ROW, JobState, OutputFile, StateWriter, Transitions
from ._graph import Graph
from ._options import Controls, RunObserver, RunOptions
from ._remote import Progress
from ._verdicts import VerdictWatch, held_cost

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..state import StateStore, Unfinished


class FollowsVerdicts:
    """The scheduler's verdict-following part (its state lives on the scheduler)."""

    jobs: JobList
    graph: Graph | None
    writer: StateWriter
    options: RunOptions
    observer: RunObserver
    controls: Controls
    _verdicts: VerdictWatch | None
    _extend: Callable[[], Awaitable[Sequence[JobSpec]]] | None
    _blocked: set[str]
    _progress: dict[str, Progress]
    _running: int
    _judged_at: float | None
    _feeding_done: anyio.Event
    _changed: anyio.Event
    _outputs: dict[str, list[OutputFile]]

    def _poke(self) -> None:
        """Wake every task waiting for a change (a job ended, a verdict came)."""
        self._changed.set()
        self._changed = anyio.Event()

    def _load_parent_outputs(
        self,
        rows: Mapping[str, Unfinished],
        states: Mapping[str, JobState],
        reader: StateStore | None = None,
    ) -> None:
        """The outputs of done parents of unfinished jobs (their children's inputs); read
        through ``reader`` once the run is under way (the writer's connection is busy)."""
        columns = self.jobs.columns
        wanted = {
            parent
            for key, parents in zip(columns.keys, columns.parents, strict=True)
            if key in rows
            for parent in parents
            if states.get(parent) is JobState.DONE
        }
        for row in (reader or self.writer.store).rows(wanted, results=False):
            self._outputs[row.key] = [OutputFile(**o) for o in row.outputs]

    # -- verdicts ----------------------------------------------------------------------------

    def _waits_for_verdicts(self) -> bool:
        """Whether the run, with nothing else to do, stays for verdicts (only if asked):
        while a look is left to judge, and two polls more after the last one was (time to
        roll a rejected look again, which this run then takes on)."""
        watch, graph = self._verdicts, self.graph
        if not self.options.wait_for_verdicts or watch is None or graph is None:
            return False
        now = anyio.current_time()
        if watch.awaits_judgement(graph):
            self._judged_at = None
            return True
        if self._judged_at is None:
            self._judged_at = now
        return now - self._judged_at < 2 * self.options.verdict_poll

    async def _follow_verdicts(self, watch: VerdictWatch) -> None:
        """Poll the state for verdicts while jobs wait for them and the run feeds jobs."""
        graph = self.graph
        assert graph is not None
        said = False
        while self.controls.stop_reason is None:
            with anyio.move_on_after(self.options.verdict_poll):
                await self._feeding_done.wait()
            if self._feeding_done.is_set():
                return
            if not graph.awaiting and not self.options.wait_for_verdicts:
                return  # nothing waits for a verdict any more
            if not said and self._running == 0 and self._waits_for_verdicts():
                said = True
                self.observer.on_note(self._waiting_words(watch))
            ready, taken, rerolled = watch.poll(graph)
            if rerolled and self._extend is not None:
                ready += await self._add_jobs(await self._extend(), watch)
            elif rerolled:
                self.observer.on_note(
                    "a reroll was asked for: its new take runs on the next `raybatch run`"
                )
            await self._reblock(taken)
            await self._release(ready)
            self._poke()

    async def _add_jobs(self, specs: Sequence[JobSpec], watch: VerdictWatch) -> list[int]:
        """Take on jobs added to the state during the run (a reroll's new take): they
        join the graph as blocked or pending; returns those that may start now."""
        graph = self.graph
        assert graph is not None
        new = [spec for spec in specs if graph.index(spec.key) is None]
        if not new:
            return []
        start = len(self.jobs)
        for spec in new:
            self.jobs.append(spec)
            state = JobState.BLOCKED if spec.parents else JobState.PENDING
            self._progress[spec.key] = Progress.of(PENDING_ROW._replace(state=state))
            if spec.parents:
                self._blocked.add(spec.key)
        states = watch.reader.states()
        self._load_parent_outputs({spec.key: PENDING_ROW for spec in new}, states, watch.reader)
        self.observer.on_note(f"a reroll added {len(new)} job(s) to this run")
        return graph.extend(start, states, watch.approved())

    async def _release(self, ready: list[int]) -> None:
        """Approved: let these jobs go (the statement checks the approval once more)."""
        graph = self.graph
        assert graph is not None
        keys = self.jobs.keys
        for i in ready:
            if keys[i] in self._blocked:
                try:
                    await self.writer.apply(Transitions.unblock(keys[i]))
                except IllegalTransition:
                    # The approval was taken back since it was read: wait for the next poll.
                    graph.awaiting[i] = set(self.jobs.columns.gates[i])
                    continue
                self._blocked.discard(keys[i])
            graph.add_ready([i])
            self.observer.on_state(self.jobs[i], JobState.PENDING, "approved")

    async def _reblock(self, taken: list[int]) -> None:
        """Taken back from a ready queue: the job waits for a verdict again."""
        keys = [self.jobs.keys[i] for i in taken]
        for key in keys:
            try:
                await self.writer.apply(Transitions.reblock(key))
            except IllegalTransition:
                continue  # approved again meanwhile; the next poll lets it go
            self._blocked.add(key)

    def _waiting_words(self, watch: VerdictWatch) -> str:
        graph = self.graph
        assert graph is not None
        to_judge, _held = watch.split(graph)
        cost = held_cost(to_judge, self.jobs.columns.costs)
        return (
            f"waiting for verdicts: {len(to_judge)} job(s) (est. ${cost:.2f}) wait for a look"
            " to be approved in `raybatch review`"
        )
