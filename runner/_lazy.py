"""Names a package imports on first use: its heavy modules (PyAV, the review server) load
only when something asks for one of their names, and ``dir()`` still lists them."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


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
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def dir_() -> list[str]:
        """The package's names, the lazily imported ones included."""
        return sorted({*namespace, *names})

    return getattr_, dir_
