"""What a plan will do and how far a run got: the summaries behind ``plan`` and ``status``.

Both read the state file only (never the network), so ``status`` is safe while a run is
going: SQLite's WAL gives this reader a consistent snapshot beside the single writer.
"""

from __future__ import annotations

import shlex
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .manifest import Plan
from .state import IN_FLIGHT, JobRow, StateStore

#: Display order of job states.
STATES = ("pending", "submitting", "queued", "running", "completed", "done", "failed", "cancelled")
#: States whose cost is already committed at fal (paid or being paid).
PAID = frozenset({"submitting", "queued", "running", "completed", "done"})


def _rows(plan: Plan, store: StateStore | None) -> dict[str, JobRow]:
    if store is None:
        return {}
    keys = {s.key for s in plan.jobs}
    return {r.key: r for r in store.rows() if r.key in keys}


def remaining_cost(plan: Plan, store: StateStore | None) -> float:
    """Estimated USD of the jobs in the plan that are not done, paid or in flight."""
    states = store.states() if store is not None else {}
    return sum(
        s.estimated_cost or 0.0 for s in plan.jobs if states.get(s.key, "pending") not in PAID
    )


def plan_summary(plan: Plan, store: StateStore | None) -> dict[str, Any]:
    """What ``plan`` shows: jobs and estimated cost per endpoint, and what is already paid."""
    states = store.states() if store is not None else {}
    per: dict[str, dict[str, Any]] = {}
    jobs = []
    for spec in plan.jobs:
        state = states.get(spec.key, "new")
        entry = per.setdefault(
            spec.endpoint,
            {
                "jobs": 0,
                "estimated_cost": 0.0,
                "unpriced": 0,
                "done": 0,
                "in_flight": 0,
                "failed": 0,
                "to_run": 0,
                "paid": 0.0,
                "remaining_cost": 0.0,
            },
        )
        cost = spec.estimated_cost
        entry["jobs"] += 1
        entry["estimated_cost"] += cost or 0.0
        entry["unpriced"] += cost is None
        if state == "done":
            entry["done"] += 1
        elif state in IN_FLIGHT or state == "completed":
            entry["in_flight"] += 1
        elif state in ("failed", "cancelled"):
            entry["failed"] += 1
        else:
            entry["to_run"] += 1
        if state in PAID:
            entry["paid"] += cost or 0.0
        else:
            entry["remaining_cost"] += cost or 0.0
        jobs.append(
            {
                "key": spec.key,
                "endpoint": spec.endpoint,
                "clip": spec.clip,
                "prompt": spec.prompt,
                "output": str(spec.output),
                "state": state,
                "estimated_cost": cost,
            }
        )
    totals = {
        k: sum(e[k] for e in per.values())
        for k in (
            "jobs",
            "estimated_cost",
            "unpriced",
            "done",
            "in_flight",
            "failed",
            "to_run",
            "paid",
            "remaining_cost",
        )
    }
    return {
        "manifest": str(plan.manifest_path),
        "name": plan.manifest.name,
        "output_dir": str(plan.output_dir),
        "endpoints": {k: _rounded(v) for k, v in per.items()},
        "total": _rounded(totals),
        "limits": [_as_dict(limit) for limit in plan.limits_applied],
        "jobs": jobs,
    }


def _as_dict(value: Any) -> dict[str, Any]:
    if hasattr(value, "_asdict"):
        return dict(value._asdict())
    if hasattr(value, "__dataclass_fields__"):
        return {k: getattr(value, k) for k in value.__dataclass_fields__}
    return dict(value)


def _rounded(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}


def format_plan(summary: dict[str, Any]) -> str:
    """``plan`` as text: a table per endpoint, the total, and the limits applied."""
    lines = [f"{summary['name']}: {summary['total']['jobs']} job(s) → {summary['output_dir']}"]
    header = (
        f"  {'endpoint':<42} {'jobs':>6} {'done':>6} {'flight':>6} {'failed':>6}"
        f" {'to run':>6} {'est. $':>10} {'paid $':>9} {'left $':>9}"
    )
    lines.append(header)
    rows = list(summary["endpoints"].items()) + [("total", summary["total"])]
    for name, e in rows:
        cost = f"{e['estimated_cost']:.2f}" + ("+?" if e["unpriced"] else "")
        lines.append(
            f"  {name:<42} {e['jobs']:>6} {e['done']:>6} {e['in_flight']:>6} {e['failed']:>6}"
            f" {e['to_run']:>6} {cost:>10} {e['paid']:>9.2f} {e['remaining_cost']:>9.2f}"
        )
    if summary["total"]["unpriced"]:
        lines.append(
            f"  ({summary['total']['unpriced']} job(s) on endpoints without a price:"
            " not counted; add `prices:` to the manifest to count them)"
        )
    if summary["limits"]:
        lines.append("limits applied:")
        for limit in summary["limits"]:
            lines.append("  " + "  ".join(f"{k}={v}" for k, v in limit.items()))
    return "\n".join(lines)


def status_summary(plan: Plan, store: StateStore | None) -> dict[str, Any]:
    """What ``status`` shows: counts per endpoint and state, failures by reason, spend."""
    rows = _rows(plan, store)
    table: dict[str, Counter[str]] = defaultdict(Counter)
    failures: dict[str, dict[str, Any]] = {}
    spend = 0.0
    units = 0.0
    ambiguous = 0
    for spec in plan.jobs:
        row = rows.get(spec.key)
        state = row.state if row else "pending"
        table[spec.endpoint][state] += 1
        if row is None:
            continue
        ambiguous += row.ambiguous
        if row.state in PAID:
            spend += row.estimated_cost or 0.0
        units += row.billable_units or 0.0
        if row.state in ("failed", "cancelled"):
            reason = f"{row.error_class or row.state}: {row.error or ''}".strip()
            group = failures.setdefault(
                reason, {"reason": reason, "kind": row.error_kind, "count": 0, "jobs": []}
            )
            group["count"] += 1
            group["jobs"].append({"key": row.key, "clip": row.clip, "prompt": row.prompt})
    total = Counter[str]()
    for counts in table.values():
        total.update(counts)
    retry = None
    if failures:
        retry = "raybatch run " + shlex.quote(str(plan.manifest_path)) + " --retry-failed"
    return {
        "name": plan.manifest.name,
        "output_dir": str(plan.output_dir),
        "jobs": len(plan.jobs),
        "by_endpoint": {k: {s: v[s] for s in STATES if v[s]} for k, v in table.items()},
        "total": {s: total[s] for s in STATES if total[s]},
        "failures": sorted(failures.values(), key=lambda g: -int(g["count"])),
        "ambiguous_submits": ambiguous,
        "estimated_spend": round(spend, 4),
        "billable_units": round(units, 4),
        "retry_command": retry,
        "state_file": str(Path(plan.output_dir) / "state.db") if store is not None else None,
    }


def format_status(summary: dict[str, Any]) -> str:
    """``status`` as text."""
    lines = [f"{summary['name']}: {summary['jobs']} job(s) in {summary['output_dir']}"]
    if summary["state_file"] is None:
        lines.append("  nothing has run yet")
    lines.append(f"  {'endpoint':<42} " + " ".join(f"{s:>9}" for s in STATES))
    for name, counts in [*summary["by_endpoint"].items(), ("total", summary["total"])]:
        lines.append(f"  {name:<42} " + " ".join(f"{counts.get(s, 0):>9}" for s in STATES))
    lines.append(
        f"  spend (estimated, submitted jobs): ${summary['estimated_spend']:.2f};"
        f" billable units reported by fal: {summary['billable_units']:g}"
    )
    if summary["ambiguous_submits"]:
        lines.append(
            f"  ambiguous submits (answer lost; may have been billed twice):"
            f" {summary['ambiguous_submits']}"
        )
    for group in summary["failures"]:
        clips = ", ".join(f"{j['clip']}/{j['prompt']}" for j in group["jobs"][:8])
        more = f" and {group['count'] - 8} more" if group["count"] > 8 else ""
        lines.append(f"  {group['count']} × {group['reason']}\n      {clips}{more}")
    if summary["retry_command"]:
        lines.append(f"  retry them: {summary['retry_command']}")
    return "\n".join(lines)


def write_review_page(plan: Plan, store: StateStore | None) -> Path:
    """Write ``<output_dir>/index.html`` (see ``review.py``)."""
    from .review import write_review_page as write

    return write(plan)
