"""What can be judged, what waits for a verdict, and what a reroll would make: the rules
the review page, its server, ``status``, ``plan`` and ``reroll`` share.

A person judges *looks* (``gate: looks``) and *final outputs*: jobs no other job takes as
input (a render, a stitch), never an intermediate step (a first frame, a segment).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..job import LOOK, JobSpec, take_group
from ..plan import Plan
from ..state import APPROVED, REJECTED, JobState, Judgement, Op, Verdicts

#: What ``verdict_counts`` counts per kind of judged job.
KINDS = ("looks", "outputs")


@dataclass(frozen=True)
class Judgeable:
    """The keys of a plan a person judges."""

    looks: frozenset[str]
    finals: frozenset[str]

    @classmethod
    def of(cls, plan: Plan) -> Judgeable:
        """Looks and final outputs of ``plan``."""
        columns = plan.columns
        parents = {key for keys in columns.parents for key in keys}
        looks = set()
        finals = set()
        for key, labels in zip(columns.keys, columns.labels, strict=True):
            if labels.get("role") == LOOK:
                looks.add(key)
            elif key not in parents:
                finals.add(key)
        return cls(frozenset(looks), frozenset(finals))

    def kind(self, key: str) -> str | None:
        """``looks``, ``outputs``, or None for a job nobody judges."""
        if key in self.looks:
            return "looks"
        return "outputs" if key in self.finals else None


def group_of(spec: JobSpec) -> str:
    """The take group a job's reroll adds a take to: a look's is its clip × prompt (every
    matrix variant shares it), an output's its clip × prompt × matrix values."""
    labels = {} if spec.role == LOOK else dict(spec.labels)
    return take_group(spec.clip, spec.prompt, labels)


def rerollable(spec: JobSpec, gated: Collection[str]) -> bool:
    """Whether rejecting ``spec`` can be answered with a new take: a look, or an output no
    look gates (a gated render is rolled again through its look)."""
    return spec.role == LOOK and spec.key in gated or (spec.role != LOOK and not spec.gates)


def reroll_ops(
    whole: Plan,
    chosen: Sequence[JobSpec],
    judged: Mapping[str, Judgement],
    rolled: Collection[str],
) -> list[tuple[JobSpec, Op]]:
    """The reroll op of each of ``chosen`` that is rejected, not rolled again yet, and
    rerollable; takes are numbered after the highest of the whole plan's group."""
    highest: dict[str, int] = {}
    for spec in whole.jobs:
        group = group_of(spec)
        highest[group] = max(highest.get(group, 0), spec.take)
    gated = {gate for spec in whole.jobs for gate in spec.gates}
    ops = []
    for spec in chosen:
        judgement = judged.get(spec.key)
        if judgement is None or judgement.verdict != REJECTED or spec.key in rolled:
            continue
        if rerollable(spec, gated):
            group = group_of(spec)
            ops.append((spec, Verdicts.reroll(spec.key, group, highest.get(group, spec.take))))
    return ops


def verdict_counts(
    plan: Plan, states: Mapping[str, JobState], judged: Mapping[str, Judgement]
) -> dict[str, Any]:
    """Per kind (looks, outputs): approved, rejected and done but not judged yet; and the
    jobs held for a verdict: waiting (their look not judged, or not made yet) and held by
    a rejected look, each with its estimated cost."""
    judgeable = Judgeable.of(plan)
    counts = {kind: {"approved": 0, "rejected": 0, "to_judge": 0} for kind in KINDS}
    for key in (*judgeable.looks, *judgeable.finals):
        kind = judgeable.kind(key)
        assert kind is not None
        verdict = judged[key].verdict if key in judged else None
        if verdict in (APPROVED, REJECTED):
            counts[kind][verdict] += 1
        elif states.get(key) is JobState.DONE:
            counts[kind]["to_judge"] += 1
    waiting = {"jobs": 0, "estimated_cost": 0.0}
    held = {"jobs": 0, "estimated_cost": 0.0}
    columns = plan.columns
    for key, gates, cost in zip(columns.keys, columns.gates, columns.costs, strict=True):
        if not gates or states.get(key, JobState.BLOCKED) is not JobState.BLOCKED:
            continue
        verdicts = [judged[g].verdict if g in judged else None for g in gates]
        if all(v == APPROVED for v in verdicts):
            continue
        bucket = held if REJECTED in verdicts else waiting
        bucket["jobs"] += 1
        bucket["estimated_cost"] = round(bucket["estimated_cost"] + (cost or 0.0), 6)
    return {**counts, "waiting_for_verdict": waiting, "held_by_rejection": held}


def count_phrases(counts: Mapping[str, Mapping[str, float]]) -> list[str]:
    """Per kind judged so far, "looks: 1 approved · 0 rejected · 2 to judge" (``counts``
    as ``verdict_counts`` gives them; kinds with nothing judgeable yet left out)."""
    phrases = []
    for kind in KINDS:
        c = counts[kind]
        if c["approved"] or c["rejected"] or c["to_judge"]:
            phrases.append(
                f"{kind}: {c['approved']:g} approved · {c['rejected']:g} rejected ·"
                f" {c['to_judge']:g} to judge"
            )
    return phrases
