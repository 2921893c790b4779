"""Superseded outputs are kept: a job replaced by a new one with the same output path (its
prompt was edited) keeps its files under ``.superseded/<key>/<path>``, so the new job's
file can take the path without destroying a render that was paid for. A job whose plan
comes back (the edit undone) has its files put back in the same way.

Run once a plan is added and before any job runs, so no new file can be at the path yet.
Crash-safe by order: the files move first (never over another file), then the state
records where they are, then the pending mark is cleared; a run killed in between
redoes what is left, and records only files it finds as recorded.
"""

from __future__ import annotations

import dataclasses

import anyio

from ..outputs import OutputSink
from ..state import ASIDE_DIR, Op, OutputFile, StateWriter, Transitions


def aside_path(key: str, path: str) -> str:
    """Where a superseded job's output ``path`` is kept."""
    return f"{ASIDE_DIR}/{key}/{path}"


async def keep_superseded(writer: StateWriter, sink: OutputSink) -> list[str]:
    """Move the files of superseded done jobs aside, and put back those of done jobs the
    plan brought back; returns a warning per file that could not be put back."""
    pending = writer.store.outputs_to_move()
    if pending is None:
        return []
    away, back = pending
    warnings: list[str] = []

    def move_all() -> list[Op]:
        # Away first: a file coming back may need the path a superseded one leaves.
        ops = [
            Transitions.outputs_moved(key, [_away(sink, key, f) for f in files])
            for key, files in away.items()
        ]
        for key, files in back.items():
            ops.append(
                Transitions.outputs_moved(key, [_back(sink, key, f, warnings) for f in files])
            )
        return ops

    ops = await anyio.to_thread.run_sync(move_all)
    await writer.apply(*ops, Transitions.moves_done())
    return warnings


def _away(sink: OutputSink, key: str, file: OutputFile) -> OutputFile:
    """Keep a superseded job's file aside. Whatever is at its path goes (nothing new can
    be there yet), so even an edited copy survives the new job's download."""
    target = aside_path(key, file.path)
    sink.move(file.path, target)
    return dataclasses.replace(file, path=target)


def _back(sink: OutputSink, key: str, file: OutputFile, warnings: list[str]) -> OutputFile:
    """Put a returning job's file back at its path, unless another file is there."""
    target = file.path.removeprefix(f"{ASIDE_DIR}/{key}/")
    sink.move(file.path, target)
    if sink.check(target, file.size, file.sha256, mtime_ns=file.mtime_ns, full=False) is None:
        return dataclasses.replace(file, path=target)
    warnings.append(f"could not put {file.path} back at {target}: another file is there")
    return file
