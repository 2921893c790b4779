"""``--only`` and ``--exclude``: which jobs of a plan a command works on.

A term is ``FIELD=GLOB`` or a bare glob. ``FIELD`` is ``clip`` (``image`` says the same),
``prompt``, ``take`` or a matrix field; a matrix value is matched as the manifest's YAML
spells it (``true``, ``5``, ``adhere_2``). A bare glob keeps its old meaning, a clip id or
a prompt name, and stands for the field whose values it matches: ``--only city --only
noir`` is city × noir; a glob matching both a clip id and a prompt name stands for either.

Terms on one field are alternatives (OR), terms on different fields must all hold (AND).
``--only`` keeps the jobs its terms describe, then ``--exclude`` removes the jobs its own
terms describe (read the same way: ``--exclude clip=city --exclude prompt=noir`` removes
city × noir only). A term that matches no value of its field, or a selection that keeps no
job, is a usage error (exit 2) that lists the values there are: a typo never runs, reports
or rewrites anything for zero jobs.
"""

from __future__ import annotations

import fnmatch
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ManifestError

CLIP, PROMPT, TAKE = "clip", "prompt", "take"
#: A bare glob matching clip ids and prompt names alike: either may hold.
EITHER = "clip or prompt"
_ALIASES = {"image": CLIP}
#: Known values listed in an error message, at most.
SHOWN_VALUES = 12


def shown_value(value: Any) -> str:
    """A matrix value as a selection matches it: text as it is, anything else as JSON
    (which is how YAML spells it: ``true``, ``5``, ``0.5``)."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Term:
    """One ``--only``/``--exclude`` argument."""

    option: str  # "--only" or "--exclude"
    text: str  # as the user typed it
    field: str | None  # None: a bare glob
    pattern: str

    @classmethod
    def parse(cls, option: str, text: str) -> Term:
        """``FIELD=GLOB`` or a bare ``GLOB`` (ids never hold ``=``)."""
        # Ids are NFC (see manifest ids); a pattern typed on macOS may arrive decomposed.
        text = unicodedata.normalize("NFC", text)
        name, equals, pattern = text.partition("=")
        if not equals:
            return cls(option, text, None, text)
        name = name.strip()
        if not name or not pattern:
            raise ManifestError(f"usage: {option} {text!r}: write FIELD=GLOB or a bare GLOB")
        return cls(option, text, _ALIASES.get(name, name), pattern)

    def matches(self, value: str) -> bool:
        """Whether the glob matches ``value`` (case-sensitive, as ids are)."""
        return fnmatch.fnmatchcase(value, self.pattern)


@dataclass(frozen=True, slots=True)
class Known:
    """Every value each field has in a plan (clip ids include skipped sources')."""

    clips: frozenset[str]
    prompts: frozenset[str]
    takes: frozenset[str]
    matrix: Mapping[str, frozenset[str]]

    def values(self, field: str) -> frozenset[str]:
        """The values of ``field``."""
        if field == CLIP:
            return self.clips
        if field == PROMPT:
            return self.prompts
        if field == TAKE:
            return self.takes
        return self.matrix.get(field, frozenset())

    @property
    def fields(self) -> list[str]:
        """Every field a term may name."""
        return [CLIP, PROMPT, TAKE, *sorted(self.matrix)]


#: A job as a selection sees it: field -> its value (absent: the job has no such field).
JobValues = Mapping[str, str]
_UNKNOWN = object()


class Selection:
    """The terms of ``--only`` and ``--exclude``, resolved against a plan's values."""

    def __init__(self, only: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self.only = [Term.parse("--only", text) for text in only]
        self.exclude = [Term.parse("--exclude", text) for text in exclude]

    def __bool__(self) -> bool:
        return bool(self.only or self.exclude)

    @property
    def fields(self) -> set[str]:
        """The fields the terms name (bare globs name clip and prompt)."""
        named = {term.field for term in (*self.only, *self.exclude)}
        return {name for name in named if name is not None} | (
            {CLIP, PROMPT} if None in named else set()
        )

    def groups(self, known: Known) -> tuple[dict[str, list[Term]], dict[str, list[Term]]]:
        """The terms of ``--only`` and of ``--exclude`` by the field each stands for;
        raises ManifestError for an unknown field or a term matching no value."""
        return _group(self.only, known), _group(self.exclude, known)


def _group(terms: Iterable[Term], known: Known) -> dict[str, list[Term]]:
    grouped: dict[str, list[Term]] = {}
    for term in terms:
        field = term.field
        if field is None:
            in_clips = any(term.matches(v) for v in known.clips)
            in_prompts = any(term.matches(v) for v in known.prompts)
            if not in_clips and not in_prompts:
                _no_match(term, known, (CLIP, PROMPT))
            field = EITHER if in_clips and in_prompts else CLIP if in_clips else PROMPT
        elif field not in known.fields:
            from ..endpoints import did_you_mean  # only on this error: it imports pydantic

            raise ManifestError(
                f"usage: {term.option} {term.text!r}: no field {field!r}"
                f"{did_you_mean(field, known.fields)}; fields: {', '.join(known.fields)}"
            )
        elif not any(term.matches(v) for v in known.values(field)):
            _no_match(term, known, (field,))
        grouped.setdefault(field, []).append(term)
    return grouped


def _no_match(term: Term, known: Known, fields: Sequence[str]) -> None:
    from ..endpoints import did_you_mean  # only on this error: it imports pydantic

    values = sorted({v for field in fields for v in known.values(field)})
    hint = did_you_mean(term.pattern, values)
    names = " or ".join(
        f"{field} value" if field not in (CLIP, PROMPT) else field for field in fields
    )
    raise ManifestError(
        f"usage: {term.option} {term.text!r} matches no {names}{hint}; "
        + "; ".join(f"{field}: {listing(known.values(field))}" for field in fields)
    )


def listing(values: Iterable[str]) -> str:
    """Up to :data:`SHOWN_VALUES` values, sorted, then how many more."""
    ordered = sorted(values)
    shown = ", ".join(ordered[:SHOWN_VALUES]) or "(none)"
    more = len(ordered) - SHOWN_VALUES
    return shown + (f" and {more} more" if more > 0 else "")


def _matcher(terms: Sequence[Term]) -> Callable[[str], bool]:
    """One compiled test for a field's alternatives, remembered per distinct value."""
    regex = re.compile("|".join(f"(?:{fnmatch.translate(t.pattern)})" for t in terms))
    seen: dict[str, bool] = {}

    def test(value: str) -> bool:
        hit = seen.get(value)
        if hit is None:
            hit = seen[value] = regex.match(value) is not None
        return hit

    return test


class Decider:
    """Decides jobs for resolved groups: kept when every ``--only`` group holds and not
    every ``--exclude`` group does."""

    def __init__(self, only: Mapping[str, list[Term]], exclude: Mapping[str, list[Term]]):
        self.only = {field: _matcher(terms) for field, terms in only.items()}
        self.exclude = {field: _matcher(terms) for field, terms in exclude.items()}

    def keeps(self, job: Mapping[str, object]) -> bool | None:
        """Whether the job is kept; a field may be unknown (absent from ``job`` while the
        caller marks it unknown with the ``_UNKNOWN`` value): None when it may go either
        way."""
        kept = _all(self.only, job)
        if kept is False:
            return False
        removed = _all(self.exclude, job) if self.exclude else False
        if removed is True:
            return False
        return None if kept is None or removed is None else True


def _all(groups: Mapping[str, Callable[[str], bool]], job: Mapping[str, object]) -> bool | None:
    """Whether every group holds for ``job``: True, False or None (undecided)."""
    result: bool | None = True
    for field, test in groups.items():
        held = _holds(field, test, job)
        if held is False:
            return False
        if held is None:
            result = None
    return result


def _holds(field: str, test: Callable[[str], bool], job: Mapping[str, object]) -> bool | None:
    if field == EITHER:
        parts = [_holds(CLIP, test, job), _holds(PROMPT, test, job)]
        return True if True in parts else None if None in parts else False
    # "*" stands for every field a job not expanded yet leaves unknown.
    value = job.get(field, job.get("*"))
    if value is _UNKNOWN:
        return None
    return isinstance(value, str) and test(value)


def unknown_values(clip: str) -> dict[str, object]:
    """A job of source ``clip`` whose other fields are not known (a source that was never
    expanded into jobs): ``Decider.keeps`` says False only if no job of it could be kept."""
    return {CLIP: clip, PROMPT: _UNKNOWN, TAKE: _UNKNOWN, "*": _UNKNOWN}
