"""A plan's jobs: one list per field (``JobColumns``), seen as ``JobSpec`` objects built on
first use (``JobList``).

At 100k jobs a ``JobSpec`` per job is itself a visible cost, and ``status`` only needs
three of the columns; a resumed run builds the specs of its unfinished jobs only.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence, Set
from dataclasses import dataclass, field
from typing import Any, TypeVar, overload

from ..job import JobSpec, LocalFile

_T = TypeVar("_T", bound=Hashable)
_V = TypeVar("_V")

#: The files of a job without any: one shared empty mapping, not one dict per job.
_NO_FILES: Mapping[str, LocalFile] = {}


@dataclass(frozen=True)
class JobColumns:
    """Every job of a plan, one list per field (index ``i`` of each list is job ``i``)."""

    keys: list[str]
    endpoints: list[str]
    arguments: list[dict[str, Any]]
    outputs: list[str]
    files: list[tuple[str, ...]]  # sha256s of the job's local files, see ``local_files``
    clips: list[str | None]
    prompts: list[str | None]
    labels: list[dict[str, Any]]
    costs: list[float | None]
    parents: list[tuple[str, ...]]
    takes: list[int]
    weights: list[float]
    gates: list[tuple[str, ...]]
    local_files: dict[str, LocalFile] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> JobColumns:
        """Columns with no job, to append to."""
        return cls([], [], [], [], [], [], [], [], [], [], [], [], [], {})

    def append(self, spec: JobSpec) -> None:
        """Add one job at the end (its local files are expected in ``local_files``)."""
        self.keys.append(spec.key)
        self.endpoints.append(spec.endpoint)
        self.arguments.append(dict(spec.arguments))
        self.outputs.append(spec.output)
        self.files.append(tuple(spec.files))
        self.clips.append(spec.clip)
        self.prompts.append(spec.prompt)
        self.labels.append(dict(spec.labels))
        self.costs.append(spec.estimated_cost)
        self.parents.append(spec.parents)
        self.takes.append(spec.take)
        self.weights.append(spec.weight)
        self.gates.append(spec.gates)

    @classmethod
    def of(cls, specs: Sequence[JobSpec]) -> JobColumns:
        """The columns of ``specs``."""
        local: dict[str, LocalFile] = {}
        for spec in specs:
            local.update(spec.files)
        return cls(
            keys=[s.key for s in specs],
            endpoints=[s.endpoint for s in specs],
            arguments=[dict(s.arguments) for s in specs],
            outputs=[s.output for s in specs],
            files=[tuple(s.files) for s in specs],
            clips=[s.clip for s in specs],
            prompts=[s.prompt for s in specs],
            labels=[dict(s.labels) for s in specs],
            costs=[s.estimated_cost for s in specs],
            parents=[s.parents for s in specs],
            takes=[s.take for s in specs],
            weights=one_of_each(s.weight for s in specs),
            gates=[s.gates for s in specs],
            local_files=local,
        )

    def specs(self) -> list[JobSpec]:
        """One ``JobSpec`` per job."""
        return [self.spec(i) for i in range(len(self.keys))]

    def spec(self, i: int) -> JobSpec:
        """Job ``i`` as a ``JobSpec``."""
        shas = self.files[i]
        return JobSpec(
            self.keys[i],
            self.endpoints[i],
            self.arguments[i],
            self.outputs[i],
            {sha: self.local_files[sha] for sha in shas} if shas else _NO_FILES,
            self.clips[i],
            self.prompts[i],
            self.labels[i],
            self.costs[i],
            self.parents[i],
            self.takes[i],
            self.weights[i],
            self.gates[i],
        )

    def take(self, indices: Sequence[int]) -> JobColumns:
        """The columns of the jobs at ``indices`` only."""

        def pick(column: list[Any]) -> list[Any]:
            return [column[i] for i in indices]

        return JobColumns(
            pick(self.keys),
            pick(self.endpoints),
            pick(self.arguments),
            pick(self.outputs),
            pick(self.files),
            pick(self.clips),
            pick(self.prompts),
            pick(self.labels),
            pick(self.costs),
            pick(self.parents),
            pick(self.takes),
            pick(self.weights),
            pick(self.gates),
            self.local_files,
        )

    def __len__(self) -> int:
        return len(self.keys)


class JobList(Sequence[JobSpec]):
    """A plan's jobs in order, each ``JobSpec`` built on first access from the columns.

    A resumed run touches only its unfinished jobs; building the other 100k specs would
    cost it half a second for nothing. ``keys`` are there without building any.
    """

    def __init__(self, columns: JobColumns, specs: Sequence[JobSpec] | None = None) -> None:
        self.columns = columns
        self._specs: list[JobSpec | None] = list(specs) if specs else [None] * len(columns)

    @classmethod
    def of(cls, specs: Sequence[JobSpec]) -> JobList:
        """A job list over specs already built."""
        return specs if isinstance(specs, JobList) else cls(JobColumns.of(specs), specs)

    @property
    def keys(self) -> list[str]:
        """Every job's key, in order."""
        return self.columns.keys

    @functools.cached_property
    def places(self) -> dict[str, int]:
        """Each job's place by key: one map a run shares (the graph, the output check)."""
        return {key: i for i, key in enumerate(self.columns.keys)}

    def own_keys(self, found: Mapping[str, _V]) -> dict[str, _V]:
        """``found`` keyed by this list's own key strings where it has them: a state read's
        copies are then freed (50k of them were 5 MB of a resumed run)."""
        keys, index = self.columns.keys, self.places
        return {keys[i] if (i := index.get(k)) is not None else k: v for k, v in found.items()}

    def keys_except(self, left_out: Set[str]) -> Set[str]:
        """This list's keys less ``left_out``, as a view (no copy of 100k keys)."""
        return _KeysExcept(self.places, left_out)

    def append(self, spec: JobSpec) -> None:
        """One more job at the end (a take a reroll added while a run goes on)."""
        self.columns.local_files.update(spec.files)
        self.columns.append(spec)
        self._specs.append(spec)
        if "places" in self.__dict__:
            self.places[spec.key] = len(self.columns.keys) - 1

    def __len__(self) -> int:
        return len(self._specs)

    @overload
    def __getitem__(self, index: int) -> JobSpec: ...
    @overload
    def __getitem__(self, index: slice) -> list[JobSpec]: ...
    def __getitem__(self, index: int | slice) -> JobSpec | list[JobSpec]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        spec = self._specs[index]
        if spec is None:
            spec = self._specs[index] = self.columns.spec(index)
        return spec

    def __iter__(self) -> Iterator[JobSpec]:
        if all(spec is None for spec in self._specs):
            self._specs = list[JobSpec | None](self.columns.specs())
        return (self[i] for i in range(len(self)))


def with_ancestors(columns: JobColumns, indices: Sequence[int]) -> list[int]:
    """``indices`` and the indices of every job they take an output from, in plan order: a
    job left without its parents would wait for ever."""
    if not any(columns.parents):
        return list(indices)
    where = {key: i for i, key in enumerate(columns.keys)}
    found = set(indices)
    stack = list(indices)
    while stack:
        for parent in columns.parents[stack.pop()]:
            i = where.get(parent)
            if i is not None and i not in found:
                found.add(i)
                stack.append(i)
    return sorted(found)


def one_of_each(values: Iterable[_T]) -> list[_T]:
    """``values`` as a list in which equal values are one object (a column of 100k equal
    floats then costs the list alone, here and in the plan cache's record)."""
    seen: dict[_T, _T] = {}
    return [seen.setdefault(v, v) for v in values]


class _KeysExcept(Set[str]):
    """The keys of ``places`` not in ``left_out``, read through, never copied."""

    def __init__(self, places: Mapping[str, int], left_out: Set[str]) -> None:
        self._places, self._left_out = places, left_out

    def __contains__(self, key: object) -> bool:
        return key in self._places and key not in self._left_out

    def __iter__(self) -> Iterator[str]:
        return (key for key in self._places if key not in self._left_out)

    def __len__(self) -> int:
        return sum(1 for _ in self)
