"""Names a package imports on first use: its heavy modules (PyAV, the review server) load
only when something asks for one of their names, and ``dir()`` still lists them.

Such a first use may come from any thread (a local step, a poster, a page of the review
server), and PyAV imported by several threads at once is left half made: a resumed run
failed its cuts with "module 'av' has no attribute 'stream'". So every import made here
takes one lock, re-entrant because one heavy module may ask for another's names.
"""

from __future__ import annotations

import importlib
import threading
import types
from collections.abc import Callable, Mapping
from typing import Any

_IMPORTING = threading.RLock()


def import_module(name: str) -> types.ModuleType:
    """The module ``name``, imported now by this thread alone if it was not yet."""
    with _IMPORTING:
        return importlib.import_module(name)


def lazy_names(
    package: str, names: Mapping[str, str], namespace: Mapping[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A package's module ``__getattr__`` and ``__dir__`` for ``names`` (name → its private
    module), given the package's ``__name__`` and ``globals()``."""

    def getattr_(name: str) -> Any:
        """A lazily imported name, from its module (imported now if it was not)."""
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{module}"), name)

    def dir_() -> list[str]:
        """The package's names, the lazily imported ones included."""
        return sorted({*namespace, *names})

    return getattr_, dir_
