"""How the commands that read a batch (``status``, ``report``, ``cancel``, ``verify``) find
it: its output directory from any working directory, and its jobs even when the manifest
cannot be planned as it stands.

* The output directory is the one ``run`` would use. When that is the default,
  ``outputs/<name>`` relative to where raybatch runs, and holds no state, the per-user
  index of output directories (``plan.output_dirs``) names where this manifest ran: the
  most recent one is used, and a note says so (never silently).
* A manifest whose sources moved, were renamed or deleted since the run cannot be planned
  (a job's key is the hash of its clip's bytes). These commands need no source: the jobs
  the state file holds (those no newer job superseded) stand in for the plan, and the
  planning problems become a warning. A manifest that cannot even be read is still an
  error (exit 2).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ManifestError
from .job import JobSpec
from .plan import ManifestFacts, Plan, cached_plan, output_dir_for, output_dirs
from .state import StateStore

if TYPE_CHECKING:
    from .endpoints import Overrides


@dataclass
class Located:
    """A manifest's plan for reading its state, and what the user should know about it."""

    plan: Plan
    #: The output directory was found in the index of earlier runs, not where ``run``
    #: from here would look (commands that print a ``run`` line must name it).
    relocated: bool = False
    warnings: list[str] = field(default_factory=list)


def locate(
    manifest: Path,
    *,
    output_dir: Path | None = None,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    overrides: Overrides | None = None,
) -> Located:
    """The plan of ``manifest`` pointed at its state (see the module docstring)."""
    try:
        whole = cached_plan(manifest, output_dir=output_dir, overrides=overrides)
        found = _state_dir(whole.manifest_path, whole.facts, output_dir)
        directory = found[0] if found else whole.output_dir
        rolled = extra_takes(directory)
        if rolled:  # takes rolled again: their jobs are the manifest's too
            whole = cached_plan(
                manifest, output_dir=output_dir, overrides=overrides, extra_takes=rolled
            )
    except ManifestError as problem:
        return _from_state(manifest, output_dir, only, exclude, problem)
    warnings = [found[1]] if found else []
    extra = _jobs_of_skipped(whole, directory, warnings)
    if found or extra:
        whole = _widened(whole, directory, extra, given=output_dir is not None or bool(found))
    return Located(whole.selected(only, exclude), relocated=found is not None, warnings=warnings)


def extra_takes(directory: Path) -> dict[str, int]:
    """Take group → highest take, for the rerolls the state in ``directory`` records."""
    store = StateStore.open_readonly(directory / "state.db")
    if store is None:
        return {}
    try:
        return store.extra_takes()
    finally:
        store.close()


def _jobs_of_skipped(plan: Plan, directory: Path, warnings: list[str]) -> list[JobSpec]:
    """The jobs the state holds for sources the plan left out (a clip moved or deleted
    since the run): they are not gone, only their files are."""
    if not plan.skipped:
        return []
    store = StateStore.open_readonly(directory / "state.db")
    if store is None:
        return []
    try:
        ids = {s.id for s in plan.skipped}
        known = set(plan.keys)
        specs = [s for s in _specs(store) if s.clip in ids and s.key not in known]
    finally:
        store.close()
    counts = Counter(s.clip for s in specs)
    for source in plan.skipped:
        if counts[source.id]:
            warnings.append(
                f"{source.problem} (moved or deleted since it ran?): its {counts[source.id]}"
                " job(s) are shown as the state holds them"
            )
    return specs


def _widened(plan: Plan, directory: Path, extra: list[JobSpec], *, given: bool) -> Plan:
    """``plan`` reading the state in ``directory``, with ``extra`` jobs after its own."""
    columns = plan.columns.take(range(len(plan)))
    for spec in extra:
        columns.append(spec)
    return Plan(
        plan.manifest_path,
        directory,
        plan.facts,
        plan.limits_applied,
        columns=columns,
        inputs=plan.inputs,
        # Extra jobs make another plan than the one the state may have recorded.
        fingerprint=None if extra else plan.fingerprint,
        output_dir_given=given,
        skipped=plan.skipped,
        duplicates=plan.duplicates,
        clips=lambda: plan.clips,
    )


def _specs(store: StateStore) -> list[JobSpec]:
    """Every job the state holds that no newer job superseded, as specs (no local files:
    what stands in for a plan that cannot be made)."""
    parents: dict[str, list[str]] = {}
    for child, parent in store.edges():
        parents.setdefault(child, []).append(parent)
    gated = store.gated_edges()
    return [
        JobSpec(
            job.key,
            job.endpoint,
            job.arguments,
            job.output,
            clip=job.clip,
            prompt=job.prompt,
            labels=job.labels,
            estimated_cost=job.estimated_cost,
            parents=tuple(parents.get(job.key, ())),
            take=job.take,
            gates=tuple(p for p in parents.get(job.key, ()) if (job.key, p) in gated),
        )
        for job in store.current_jobs()
    ]


def _state_dir(manifest: Path, facts: ManifestFacts, given: Path | None) -> tuple[Path, str] | None:
    """Where this manifest's state is when the default output directory from here has
    none, with a note saying so; None when the usual directory is the one."""
    default = output_dir_for(manifest, facts, given)
    if given is not None or facts.output_dir is not None or (default / "state.db").exists():
        return None
    earlier = [d for d in output_dirs(manifest) if d != default]
    if not earlier:
        return None
    note = (
        f"no state in {default} (the default output directory from here); using {earlier[-1]},"
        f" where {manifest.name} last ran"
    )
    if len(earlier) > 1:
        others = ", ".join(str(d) for d in earlier[:-1])
        note += f" (it also ran in {others}: pass --output-dir to choose)"
    return earlier[-1], note


def _from_state(
    manifest: Path,
    output_dir: Path | None,
    only: Sequence[str],
    exclude: Sequence[str],
    problem: ManifestError,
) -> Located:
    """The jobs the state holds, as a plan, for a manifest that cannot be planned; raises
    ``problem`` when there is no state to read or the manifest itself is unreadable."""
    from .manifest import load

    model, _lines = load(manifest)  # a manifest that cannot be read at all: exit 2
    facts = ManifestFacts(
        model.name, model.output_dir, model.concurrency, model.max_cost, model.prompts
    )
    found = _state_dir(manifest, facts, output_dir)
    directory = found[0] if found else output_dir_for(manifest, facts, output_dir)
    store = StateStore.open_readonly(directory / "state.db")
    if store is None:
        raise problem
    try:
        specs = _specs(store)
    finally:
        store.close()
    plan = Plan(
        manifest,
        directory,
        facts,
        [],
        jobs=specs,
        output_dir_given=output_dir is not None or found is not None,
    ).selected(only, exclude)
    warnings = [] if found is None else [found[1]]
    shown = str(problem).replace("\n", "\n  ")
    warnings.append(
        f"{manifest.name} cannot be planned as it stands (a source moved?); showing the"
        f" {len(plan)} job(s) its state holds. The problems:\n  {shown}"
    )
    return Located(plan, relocated=found is not None, warnings=warnings)
