"""One job's whole story (``raybatch show``): its input as sent, every attempt with its
request id and the logs fal sent, cost and billable units, files with sha256, verdicts,
and its parents and children in the graph. Read-only, safe while a run goes on.

A job is named by a key prefix (at least 6 hex digits) or a label: ``clip/prompt``,
``clip/prompt/TAKE``, with ``/look`` (or `` (look)``) for its look, or exactly as
``status`` and ``plan`` print it (``city/noir[take=2] (look)``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any

from ..errors import ManifestError
from ..job import LOCAL_PREFIX, LOOK, JobSpec, job_label, substitute
from ..plan import Plan
from ..state import StateStore

_HEX = re.compile(r"[0-9a-f]{6,64}")
#: Jobs a failed lookup lists as candidates.
_LISTED = 12


def find_job(plan: Plan, store: StateStore | None, which: str) -> str:
    """The key of the job ``which`` names (see the module docstring); ManifestError,
    listing candidates, when it names none or several."""
    text = which.strip()
    keys = list(plan.keys)
    if store is not None:
        keys += [key for key in store.states() if key not in plan.jobs.places]
    if _HEX.fullmatch(text.lower()):
        found = [key for key in keys if key.startswith(text.lower())]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise ManifestError(f"usage: {which!r} starts {len(found)} job keys; give more of it")
    matches = _by_label(plan, text)
    if len(matches) == 1:
        return matches[0].key
    shown = matches or [spec for spec in plan.jobs if spec.clip and text.startswith(spec.clip)]
    listed = "".join(f"\n  {spec.key[:12]}  {spec.label}" for spec in shown[:_LISTED])
    more = f"\n  … and {len(shown) - _LISTED} more" if len(shown) > _LISTED else ""
    why = "names several jobs" if matches else "names no job of this plan"
    raise ManifestError(f"usage: {which!r} {why}; give a key prefix or a label{listed}{more}")


def _by_label(plan: Plan, text: str) -> list[JobSpec]:
    exact = [spec for spec in plan.jobs if spec.label == text]
    if exact:
        return exact
    look = text.endswith(("/look", " (look)"))
    head = text.removesuffix("/look").removesuffix(" (look)")
    parts = head.split("/")
    take = 1
    if len(parts) == 3 and parts[2].isdigit():
        take = int(parts.pop())
    if len(parts) != 2:
        return []
    clip, prompt = parts
    group = [
        spec
        for spec in plan.jobs
        if spec.clip == clip and spec.prompt == prompt and spec.take == take
        and (spec.role == LOOK) == look
    ]  # fmt: skip
    parents = {key for spec in plan.jobs for key in spec.parents}
    finals = [spec for spec in group if spec.key not in parents]
    return finals or group


def job_story(plan: Plan, store: StateStore | None, key: str) -> dict[str, Any]:
    """Everything known about job ``key``, as ``show --json`` prints it."""
    index = {k: i for i, k in enumerate(plan.keys)}
    spec = plan.jobs[index[key]] if key in index else None
    row = store.row(key) if store is not None else None
    attempts = store.attempts(key) if store is not None else []
    spend = store.spend_by_job().get(key, (0.0, 0)) if store is not None else (0.0, 0)
    states = store.states() if store is not None else {}
    judgements = store.judgements() if store is not None else {}
    endpoint = spec.endpoint if spec else row.endpoint if row else "?"
    labels = dict(spec.labels) if spec else dict(row.labels) if row else {}
    clip = spec.clip if spec else row.clip if row else None
    prompt = spec.prompt if spec else row.prompt if row else None
    take = spec.take if spec else row.take if row else 1
    if take != 1:
        labels.setdefault("take", take)
    planned = _readable(spec) if spec else None
    story: dict[str, Any] = {
        "key": key,
        "label": job_label(endpoint, clip, prompt, labels),
        "endpoint": endpoint,
        "clip": clip,
        "prompt": prompt,
        "take": take,
        "role": (spec.role if spec else row.role if row else None),
        "in_plan": spec is not None,
        "state": str(row.state) if row else "new",
        "output": spec.output if spec else row.output if row else None,
        "input": planned,
        "input_sent": json.loads(attempts[-1]["sent"])
        if attempts and attempts[-1]["sent"]
        else None,
        "estimated_cost": spec.estimated_cost if spec else row.estimated_cost if row else None,
        "spend": spend[0],
        "paid_submissions": spend[1],
        "billable_units": row.billable_units if row else None,
        "attempts": [_attempt(a) for a in attempts],
        "files": row.outputs if row else [],
        "error": _error(row),
        "verdict": row.verdict if row else None,
        "note": row.note if row else None,
        "verdicts": store.verdict_history(key) if store is not None else [],
        "rerolled_as": _rerolled(store, key),
        "parents": _relatives(plan, store, key, states, judgements, up=True),
        "children": _relatives(plan, store, key, states, judgements, up=False),
    }
    return story


def _readable(spec: JobSpec) -> dict[str, Any]:
    """The planned input, local files by path and parents' outputs by key."""
    names = {sha: str(local.path) for sha, local in spec.files.items()}

    def readable(text: str) -> str:
        if text.startswith(LOCAL_PREFIX):
            return names.get(text.removeprefix(LOCAL_PREFIX), text)
        return text

    shown = substitute(spec.arguments, readable)
    assert isinstance(shown, dict)
    return shown


def _attempt(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "attempt": row["attempt"],
        "request_id": row["request_id"],
        "billing": row["billing"],
        "outcome": row["outcome"],
        "cost": row["cost"],
        "billable_units": row["billable_units"],
        "intent_at": row["intent_at"],
        "submitted_at": row["submitted_at"],
        "ended_at": row["ended_at"],
        "logs": json.loads(row["logs"]) if row.get("logs") else [],
    }


def _error(row: Any) -> dict[str, Any] | None:
    if row is None or not row.error:
        return None
    return {"class": row.error_class, "kind": row.error_kind, "message": row.error}


def _rerolled(store: StateStore | None, key: str) -> int | None:
    if store is None:
        return None
    for reroll in store.rerolls():
        if reroll["from_key"] == key:
            return int(reroll["take"])
    return None


def _relatives(
    plan: Plan,
    store: StateStore | None,
    key: str,
    states: dict[str, Any],
    judgements: dict[str, Any],
    *,
    up: bool,
) -> list[dict[str, Any]]:
    """The job's parents (``up``) or children, from the plan and the state's edges."""
    columns = plan.columns
    gated: set[tuple[str, str]] = set()
    pairs: set[tuple[str, str]] = set()
    for child, parents, gates in zip(columns.keys, columns.parents, columns.gates, strict=True):
        for parent in parents:
            pairs.add((child, parent))
            if parent in gates:
                gated.add((child, parent))
    if store is not None:
        pairs.update(store.edges())
    related = sorted({p if up else c for c, p in pairs if (c if up else p) == key})
    labels = {spec.key: spec.label for spec in plan.jobs if spec.key in related}
    found = []
    for other in related:
        judged = judgements.get(other)
        found.append(
            {
                "key": other,
                "label": labels.get(other, other[:12]),
                "state": str(states.get(other, "new")),
                "gate": ((key, other) if up else (other, key)) in gated,
                "verdict": judged.verdict if judged else None,
            }
        )
    return found


def format_story(story: dict[str, Any]) -> str:
    """``show`` as text."""
    lines = [f"{story['label']}  ({story['key']})"]
    lines.append(f"  endpoint  {story['endpoint']}")
    lines.append(
        f"  state     {story['state']}" + ("" if story["in_plan"] else "  (not in this plan)")
    )
    if story["output"]:
        lines.append(f"  output    {story['output']}")
    verdict = story["verdict"] or "not judged"
    lines.append(f"  verdict   {verdict}" + (f"; note: {story['note']}" if story["note"] else ""))
    if story["rerolled_as"]:
        lines.append(f"  rolled again as take {story['rerolled_as']}")
    cost = story["estimated_cost"]
    lines.append(
        f"  cost      est. {'?' if cost is None else f'${cost:.2f}'}; spent ${story['spend']:.2f}"
        f" over {story['paid_submissions']} paid submission(s);"
        f" billable units {story['billable_units'] if story['billable_units'] is not None else '-'}"
    )
    if story["error"]:
        lines.append(f"  error     {story['error']['class']}: {story['error']['message']}")
    shown = story["input_sent"] or story["input"]
    if shown:
        lines.append("input as sent:" if story["input_sent"] else "input (planned):")
        lines.extend(f"  {name}: {_value(value)}" for name, value in shown.items())
    for attempt in story["attempts"]:
        when = _stamp(attempt["intent_at"])
        lines.append(
            f"attempt {attempt['attempt']}: {when} request {attempt['request_id'] or '-'}"
            f" · {attempt['billing']} · {attempt['outcome'] or 'open'}"
        )
        lines.extend(_log_line(entry) for entry in attempt["logs"])
    for output in story["files"]:
        lines.append(f"file {output['path']}  {output['size']} bytes  sha256 {output['sha256']}")
    for given in story["verdicts"]:
        what = given["verdict"] if given["verdict"] else f"note: {given['note']}"
        lines.append(f"verdict {_stamp(given['at'])} {what} ({given['origin']})")
    lines.extend(_relative_lines("parent", story["parents"]))
    lines.extend(_relative_lines("child", story["children"]))
    return "\n".join(lines)


def _log_line(entry: dict[str, Any]) -> str:
    parts = (entry.get("timestamp", ""), entry.get("level", ""), entry.get("message", ""))
    return "    " + " ".join(str(p) for p in parts if p)


def _relative_lines(kind: str, relatives: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for other in relatives:
        gate = " · waits for its approval" if other["gate"] and kind == "parent" else ""
        verdict = f" · {other['verdict']}" if other["verdict"] else ""
        lines.append(
            f"{kind} {other['key'][:12]} {other['label']} · {other['state']}{verdict}{gate}"
        )
    return lines


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _stamp(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
