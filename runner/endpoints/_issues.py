"""Pydantic validation errors in plain words, each with the field path it belongs to.

Both the manifest's own structure and every endpoint's input are validated by pydantic
models; this module turns their ``ValidationError``\\ s into ``Issue``\\ s a user can act
on: the field, the rule in words, and a "did you mean" for a mistyped key.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

Loc = tuple[str | int, ...]

# Error types raised by raybatch's own validators (see ``base``): a cross-field rule carries
# the field it is about in its context; a refused field carries its explanation as message.
RULE = "rule"
UNAVAILABLE = "unavailable"

# Pydantic adds these to a location for dict keys and tagged unions; they name no field.
_NOT_FIELDS = frozenset({"[key]"})
_SHOWN_INPUT = 40


@dataclass(frozen=True, slots=True)
class Issue:
    """One thing wrong with an input: where (a location tuple) and what, in words."""

    loc: Loc
    message: str
    type: str

    @property
    def field(self) -> str:
        """The location spelled like ``clips[1].input.resolution``."""
        return format_loc(self.loc)


def format_loc(loc: Iterable[str | int]) -> str:
    """Spell a location tuple as a field path: ``("clips", 1, "input")`` → ``clips[1].input``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` when a choice is close to ``word``, else ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def issues_from(error: ValidationError, model: Any) -> list[Issue]:
    """The issues in ``error``, raised while validating against ``model`` (a type)."""
    issues: list[Issue] = []
    for detail in error.errors():
        loc: Loc = tuple(part for part in detail["loc"] if part not in _NOT_FIELDS)
        ctx = detail.get("ctx") or {}
        if detail["type"] == RULE:
            issues.extend(Issue((*loc, f), m, RULE) for f, m in ctx["violations"])
        else:
            issues.append(Issue(loc, _describe(detail, loc, model), detail["type"]))
    return issues


def _describe(detail: ErrorDetails, loc: Loc, model: Any) -> str:
    kind = detail["type"]
    ctx = detail.get("ctx") or {}
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else ""
        return f"unknown field {name!r}" + did_you_mean(name, _fields_at(model, loc[:-1]))
    if kind == "literal_error":
        expected = re.findall(r"'([^']*)'", ctx.get("expected", "")) or [ctx.get("expected", "")]
        return f"{_shown(detail['input'])} is not one of {', '.join(expected)}"
    if kind == UNAVAILABLE:
        return detail["msg"]
    message = detail["msg"]
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if isinstance(detail["input"], str | int | float | bool) and kind != "value_error":
        message += f" (got {_shown(detail['input'])})"
    return message


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOWN_INPUT else text[: _SHOWN_INPUT - 4] + "...'"


def _fields_at(model: Any, loc: Sequence[str | int]) -> list[str]:
    """The field names a model nested at ``loc`` inside ``model`` accepts (for suggestions)."""
    candidates = [model]
    for part in loc:
        candidates = [child for c in candidates for child in _children(c, part)]
    return [name for c in candidates for name in _model_fields(c)]


def _children(annotation: Any, part: str | int) -> list[Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _children(args[0], part)
    if origin in (typing.Union, types.UnionType):
        return [child for arg in args for child in _children(arg, part)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return [field.annotation] if field is not None else []
    if origin in (list, tuple, dict) and args:
        return [_unwrap(args[-1])]
    return []


def _unwrap(annotation: Any) -> Any:
    if typing.get_origin(annotation) is typing.Annotated:
        return typing.get_args(annotation)[0]
    return annotation


def _model_fields(annotation: Any) -> list[str]:
    annotation = _unwrap(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [name for arg in typing.get_args(annotation) for name in _model_fields(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []
