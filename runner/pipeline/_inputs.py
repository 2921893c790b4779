"""What a job's inputs are made of: each local file uploaded once however many jobs share
it, and the outputs of its parents (``@job:`` placeholders) as URLs or local paths."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import anyio

from ..errors import PermanentError
from ..job import split_parent_ref, substitute
from ..state import OutputFile


class Once:
    """Run an async producer once per key; concurrent callers share its outcome."""

    def __init__(self) -> None:
        self._values: dict[str, str] = {}
        self._running: dict[str, anyio.Event] = {}

    async def get(self, key: str, produce: Callable[[], Awaitable[str]]) -> str:
        """The value for ``key``, produced by the first caller."""
        while key not in self._values:
            event = self._running.get(key)
            if event is not None:
                await event.wait()
                continue
            event = self._running[key] = anyio.Event()
            try:
                self._values[key] = await produce()
            finally:
                del self._running[key]
                event.set()
        return self._values[key]


def parent_output(outputs: Mapping[str, list[OutputFile]], ref: str) -> OutputFile:
    """The output a ``@job:`` placeholder names (the first file, or the one at its field)."""
    parsed = split_parent_ref(ref)
    assert parsed is not None
    key, field_path = parsed
    files = outputs.get(key)
    if not files:
        raise PermanentError(f"the output of job {key[:12]} is not available")
    if field_path is None:
        return files[0]
    for found in files:
        if found.field == field_path:
            return found
    raise PermanentError(f"job {key[:12]} has no output {field_path!r}")


def local_inputs(
    outputs: Mapping[str, list[OutputFile]],
    sink_path: Callable[[str], Path],
    arguments: Mapping[str, Any],
) -> Any:
    """``arguments`` with each ``@job:`` placeholder as the local path of that output."""

    def replace(text: str) -> str:
        if split_parent_ref(text) is None:
            return text
        return str(sink_path(parent_output(outputs, text).path))

    return substitute(arguments, replace)
