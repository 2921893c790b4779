"""Each package of ``runner`` has one public surface: its ``__init__``'s ``__all__`` (httpx
style). Everything else lives in ``_private`` modules; a new public name must be added to
``__all__`` on purpose."""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

PACKAGES = (
    "runner.endpoints",
    "runner.export",
    "runner.fal",
    "runner.manifest",
    "runner.outputs",
    "runner.pipeline",
    "runner.plan",
    "runner.report",
    "runner.state",
)


def public_names(package: types.ModuleType) -> set[str]:
    """The classes, functions and constants a package exposes (no module, no _name),
    names it imports on first use included (``dir`` lists them)."""
    return {
        attr
        for attr in dir(package)
        if not attr.startswith("_")
        and not isinstance(getattr(package, attr), types.ModuleType)
        and attr != "annotations"
    }


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_exactly_the_public_names(name: str) -> None:
    """``__all__`` lists every public class, function and constant the package exposes,
    and nothing it does not have."""
    package = importlib.import_module(name)
    exported = package.__all__
    assert isinstance(exported, tuple)
    assert len(set(exported)) == len(exported), "a name is listed twice"
    assert public_names(package) == set(exported)


@pytest.mark.parametrize("name", PACKAGES)
def test_implementation_modules_are_private(name: str) -> None:
    """Every module inside a package is ``_private``: the package is the only way in."""
    package = importlib.import_module(name)
    inside = [
        attr
        for attr, value in vars(package).items()
        if isinstance(value, types.ModuleType) and value.__name__.startswith(name + ".")
    ]
    assert all(module.startswith("_") for module in inside), inside


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_object_has_a_docstring(name: str) -> None:
    """Each exported class and function says what it does."""
    package = importlib.import_module(name)
    for attr in package.__all__:
        value = getattr(package, attr)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"{name}.{attr} has no docstring"
