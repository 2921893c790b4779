"""The single writer: one task group-commits every transition of a run."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable

import anyio
from anyio.abc import TaskStatus

from ._store import StateStore


class StateWriter:
    """The single writer: group-commits queued transitions from many tasks.

    ``await writer.apply(op)`` returns once ``op`` is committed, so callers may act on
    it (for instance POST after the intent is durable). Commits run in a worker thread
    so the event loop never waits on fsync.
    """

    def __init__(self, store: StateStore, *, max_batch: int = 500) -> None:
        self._store = store
        self._max_batch = max_batch
        send, receive = anyio.create_memory_object_stream[
            tuple[Callable[[sqlite3.Connection], None], _Waiter]
        ](math.inf)
        self._send = send
        self._receive = receive
        self._failure: BaseException | None = None

    async def apply(self, *ops: Callable[[sqlite3.Connection], None]) -> None:
        """Commit ``ops`` (in one transaction with whatever else is waiting)."""
        if self._failure is not None:
            raise self._failure
        waiter = _Waiter()
        for op in ops[:-1]:
            self._send.send_nowait((op, _Waiter()))
        self._send.send_nowait((ops[-1], waiter))
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
                if self._failure is None:
                    try:
                        # Shielded by default (to_thread): a cancelled run still finishes
                        # the commit it started, so no acknowledged write is half-done.
                        await anyio.to_thread.run_sync(
                            self._store.execute_batch, [op for op, _ in batch]
                        )
                    except Exception as exc:  # handed to every waiter below
                        self._failure = exc
                if self._failure is not None:
                    # After one failed commit nothing more is written: every waiter, now
                    # and later, gets that error (a DiskError stops the run as fatal).
                    for _, waiter in batch:
                        waiter.fail(self._failure)
                    continue
                for _, waiter in batch:
                    waiter.done()

    def close(self) -> None:
        """No more writes: ``run`` returns after committing what is queued."""
        self._send.close()


class _Waiter:
    """A one-shot acknowledgement: committed, or failed with an exception."""

    __slots__ = ("_error", "_event")

    def __init__(self) -> None:
        self._event = anyio.Event()
        self._error: BaseException | None = None

    def done(self) -> None:
        self._event.set()

    def fail(self, exc: BaseException) -> None:
        self._error = exc
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        if self._error is not None:
            raise self._error
