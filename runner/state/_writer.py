"""The single writer: one task group-commits every write of a session.

Every change to ``state.db`` — a plan added, a transition, a reset, a verdict — goes
through :meth:`StateWriter.apply`, which returns once the change is committed, so the
caller may act on it (POST after the intent is durable). Whatever waits is batched into
one transaction: at 100 transitions per commit SQLite does ~80k/s here, against ~4k/s one
by one. Commits run in a worker thread so the event loop never waits on fsync.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from anyio.abc import TaskStatus

from ._rows import Op
from ._store import StateStore


class StateWriter:
    """Group-commits queued ops from many tasks; see the module docstring."""

    def __init__(self, store: StateStore, *, max_batch: int = 500) -> None:
        self.store = store
        self._max_batch = max_batch
        # Unbounded on purpose: ``apply`` must never block before its op is queued (a
        # shielded submit window waits on it); callers wait on their own acknowledgement,
        # so at most one op per waiting task is ever queued.
        send, receive = anyio.create_memory_object_stream[tuple[Op, _Waiter]](math.inf)
        self._send = send
        self._receive = receive
        self._failure: BaseException | None = None

    async def apply(self, *ops: Op) -> None:
        """Commit ``ops`` (in one transaction with whatever else is waiting); raises the
        first op's refusal (IllegalTransition) or the commit's failure."""
        if self._failure is not None:
            raise self._failure
        waiters = [_Waiter() for _ in ops]
        for op, waiter in zip(ops, waiters, strict=True):
            self._send.send_nowait((op, waiter))
        for waiter in waiters:
            await waiter.wait()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve commits until :meth:`close`; a failed commit fails every waiter with it
        (this task itself never raises: the callers decide what a failure means)."""
        task_status.started()
        with self._send, self._receive:
            async for first in self._receive:
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                refused: list[BaseException | None] = [None] * len(batch)
                if self._failure is None:
                    try:
                        # Shielded by default (to_thread): a cancelled run still finishes
                        # the commit it started, so no acknowledged write is half-done.
                        refused = list(
                            await anyio.to_thread.run_sync(
                                self.store.execute_batch, [op for op, _ in batch]
                            )
                        )
                    except Exception as exc:  # handed to every waiter below
                        self._failure = exc
                for (_, waiter), error in zip(batch, refused, strict=True):
                    # After one failed commit nothing more is written: every waiter, now
                    # and later, gets that error (a DiskError stops the run as fatal).
                    waiter.settle(self._failure or error)

    def close(self) -> None:
        """No more writes: ``run`` returns after committing what is queued."""
        self._send.close()


@asynccontextmanager
async def open_writer(store: StateStore) -> AsyncIterator[StateWriter]:
    """A running writer for the block; on exit it commits what is queued, then stops.

    An error from the block comes out as itself, not wrapped in the task group's
    ExceptionGroup (the writer task never raises).
    """
    writer = StateWriter(store)
    failure: Exception | None = None
    async with anyio.create_task_group() as group:
        await group.start(writer.run)
        try:
            yield writer
        except Exception as exc:
            failure = exc
        finally:
            writer.close()
    if failure is not None:
        raise failure


class _Waiter:
    """A one-shot acknowledgement: committed, or failed with an exception."""

    __slots__ = ("_error", "_event")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._error: BaseException | None = None

    def settle(self, error: BaseException | None) -> None:
        self._error = error
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        if self._error is not None:
            raise self._error
