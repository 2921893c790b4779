"""The pydantic building blocks every endpoint model (and the manifest) is made of.

``Strict`` refuses unknown keys. ``Ruled`` adds cross-field rules that report every broken
rule at once, each against the field it is about. ``unavailable`` marks a field an endpoint
refuses with a sentence saying why. ``VideoRef`` and ``ImageRef`` are media references: an
http(s) URL, a ``data:`` URI or a local file's ``@local:`` placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

from runner.endpoints._issues import RULE, UNAVAILABLE
from runner.job import LOCAL_PREFIX
from runner.media import MediaKind, is_remote, reference_problem

_PLACEHOLDER = re.compile(re.escape(LOCAL_PREFIX) + "[0-9a-f]{64}")

Violation = tuple[str, str]


class Strict(BaseModel):
    """A model that refuses keys it does not define (a typo must not pass silently)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)


class Ruled(Strict):
    """A model with cross-field rules.

    Subclasses override ``violations`` (calling ``super()``) and yield ``(field, message)``
    for each rule the instance breaks; validation then fails with all of them at once.
    """

    def violations(self) -> Iterator[Violation]:
        """The ``(field, message)`` of each cross-field rule this instance breaks."""
        return iter(())

    @model_validator(mode="after")
    def _check_rules(self) -> Self:
        found = list(self.violations())
        if found:
            summary = "; ".join(f"{field}: {message}" for field, message in found)
            raise PydanticCustomError(RULE, "{summary}", {"summary": summary, "violations": found})
        return self


def unavailable(message: str) -> BeforeValidator:
    """Metadata for a field the endpoint refuses: any value but null fails with ``message``."""

    def refuse(value: object) -> None:
        if value is not None:
            raise PydanticCustomError(UNAVAILABLE, message)

    return BeforeValidator(refuse)


@dataclass(frozen=True, slots=True)
class Media:
    """Marks a field (or list item) that holds a reference to a video or an image."""

    kind: MediaKind


def _check_reference(value: str) -> str:
    if value.startswith(LOCAL_PREFIX):
        problem = None if _PLACEHOLDER.fullmatch(value) else "is not a valid local-file placeholder"
    elif is_remote(value):
        problem = reference_problem(value)
    else:
        problem = "must be an http(s) URL or a data: URI (local paths only work in a manifest)"
    if problem is not None:
        raise PydanticCustomError("reference", problem)
    return value


VideoRef = Annotated[str, AfterValidator(_check_reference), Media("video")]
ImageRef = Annotated[str, AfterValidator(_check_reference), Media("image")]
