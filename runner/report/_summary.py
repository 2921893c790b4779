"""What a plan will do and how far a run got: the summaries behind ``plan`` and ``status``.

Both read the state file only (never the network), so ``status`` is safe while a run is
going: SQLite's WAL gives this reader a consistent snapshot beside the single writer.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..job import job_label
from ..plan import ClipFacts, JobColumns, Plan
from ..state import JobRow, JobState, StateStore
from ._judging import count_phrases, verdict_counts
from ._segments import format_segments, segments_summary

#: Display order of job states (the stored ones, in the order a job moves through them).
STATES = tuple(s.value for s in JobState if s.stored)
#: How many affected jobs ``status`` lists per failure reason (``--json`` has them all).
FAILURES_LISTED = 8


def _skipped(retry_failed: bool) -> set[JobState]:
    """States a run does not submit: already accepted by fal, and (unless they are to be
    retried) failed or cancelled."""
    skipped = {s for s in JobState if s.accepted}
    if not retry_failed:
        skipped |= {JobState.FAILED, JobState.CANCELLED}
    return skipped


def _would_submit(
    plan: Plan, store: StateStore | None, retry_failed: bool
) -> Iterator[tuple[str, float | None]]:
    """(endpoint, estimated cost) of each job a run would submit."""
    skipped = _skipped(retry_failed)
    states = store.states() if store is not None else {}
    columns = plan.columns
    for key, endpoint, cost in zip(columns.keys, columns.endpoints, columns.costs, strict=True):
        if states.get(key, JobState.PENDING) not in skipped:
            yield endpoint, cost


def to_submit(
    plan: Plan, store: StateStore | None, *, retry_failed: bool = False
) -> tuple[int, float]:
    """How many jobs a run would submit, and their estimated USD: not done, paid or in
    flight, and not failed or cancelled unless they are to be retried."""
    if store is not None and store.holds_exactly(plan.identity, len(plan)):
        return store.remaining(excluding=_skipped(retry_failed))  # SQLite counts the plan
    jobs, usd = 0, 0.0
    for _, cost in _would_submit(plan, store, retry_failed):
        jobs, usd = jobs + 1, usd + (cost or 0.0)
    return jobs, usd


def unpriced_remaining(
    plan: Plan, store: StateStore | None, *, retry_failed: bool = False
) -> dict[str, int]:
    """Jobs a run would submit that have no estimated cost, counted per endpoint (the
    jobs ``to_submit`` cannot price, so no budget can cover them)."""
    if all(cost is not None for cost in plan.columns.costs):
        return {}  # the common case, decided without reading the state
    jobs = _would_submit(plan, store, retry_failed)
    return dict(Counter(endpoint for endpoint, cost in jobs if cost is None))


#: The figures ``plan`` shows per endpoint, in its JSON's order.
_PLAN_COLUMNS = (
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


def _plan_column(state: JobState) -> str:
    """The column of ``plan``'s table a job in ``state`` counts in."""
    if state is JobState.DONE:
        return "done"
    if state.in_flight or state is JobState.COMPLETED:
        return "in_flight"
    if state in (JobState.FAILED, JobState.CANCELLED):
        return "failed"
    return "to_run"


#: Each stored state's column (and "new": a job not in the state yet), looked up per job.
_PLAN_COLUMN = {"new": "to_run", **{s.value: _plan_column(s) for s in JobState if s.stored}}
#: States whose estimated cost is committed (not "remaining"): see ``JobState.accepted``.
_ACCEPTED = frozenset(s.value for s in JobState if s.accepted)


def plan_summary(plan: Plan, store: StateStore | None, *, jobs: bool = True) -> dict[str, Any]:
    """What ``plan`` shows: jobs and estimated cost per endpoint, what fal may have billed
    already (every accepted submission, as ``status`` counts spend), what is left; with
    ``jobs``, each job too (the text form does not show them: 100k of them were 36 MB)."""
    states: dict[str, Any] = dict(store.states()) if store is not None else {}
    paid = store.spend_by_endpoint() if store is not None else {}
    per: dict[str, dict[str, Any]] = {}
    c = plan.columns
    found = [states.get(key, "new") for key in c.keys]
    for endpoint, cost, state in zip(c.endpoints, c.costs, found, strict=True):
        entry = per.get(endpoint)
        if entry is None:
            entry = per[endpoint] = dict.fromkeys(_PLAN_COLUMNS, 0)
            entry["estimated_cost"] = entry["paid"] = entry["remaining_cost"] = 0.0
        usd = cost or 0.0
        entry["jobs"] += 1
        entry["estimated_cost"] += usd
        entry["unpriced"] += cost is None
        entry[_PLAN_COLUMN[state]] += 1
        if state not in _ACCEPTED:
            entry["remaining_cost"] += usd
    for endpoint, usd in paid.items():
        if endpoint in per:
            per[endpoint]["paid"] = usd
    totals = {k: sum(e[k] for e in per.values()) for k in _PLAN_COLUMNS}
    return {
        "manifest": str(plan.manifest_path),
        "name": plan.facts.name,
        "output_dir": str(plan.output_dir),
        "endpoints": {k: _rounded(v) for k, v in per.items()},
        "total": _rounded(totals),
        "limits": [_as_dict(limit) for limit in plan.limits_applied],
        "verdicts": _verdicts(plan, store, states),
        "segmented": segments_summary(plan.segmented),
        "warnings": clip_warnings(plan),
        **sources_summary(plan),
        **({"jobs": _job_list(c, found)} if jobs else {}),
    }


def _job_list(c: JobColumns, states: list[str]) -> list[dict[str, Any]]:
    """Each job as ``plan --json`` lists it, with its state (``states``, in job order)."""
    return [
        {
            "key": key,
            "endpoint": endpoint,
            "clip": clip,
            "prompt": prompt,
            "labels": labels,
            "output": output,
            "state": state,
            "estimated_cost": cost,
        }
        for key, endpoint, cost, clip, prompt, output, labels, state in zip(
            c.keys,
            c.endpoints,
            c.costs,
            c.clips,
            c.prompts,
            c.outputs,
            c.labels,
            states,
            strict=True,
        )
    ]


def _verdicts(
    plan: Plan, store: StateStore | None, states: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Verdict counts and what waits for a verdict, when anything is judged or gated
    (None for a plain batch: a summary of 100k jobs does not read what it would not show).
    Without ``states`` (``status``), the state alone says whether anything is gated: a
    remembered plan's gates are in the part of it ``status`` never loads."""
    judging = store.has_judging() if store is not None else False
    if not judging and (states is None or not any(plan.columns.gates)):
        return None
    if states is None:
        states = dict(store.states()) if store is not None else {}
    judged = store.judgements() if store is not None else {}
    return verdict_counts(plan, {k: JobState(v) for k, v in states.items() if v != "new"}, judged)


def _verdict_lines(verdicts: dict[str, Any] | None, manifest: str) -> list[str]:
    """The verdict part of ``plan`` and ``status``: counts, and what waits and holds."""
    if verdicts is None:
        return []
    counts = count_phrases(verdicts)
    lines = [f"verdicts: {'; '.join(counts)}"] if counts else []
    waiting, held = verdicts["waiting_for_verdict"], verdicts["held_by_rejection"]
    quoted = shlex.quote(manifest)
    if waiting["jobs"]:
        lines.append(
            f"waiting for a verdict: {waiting['jobs']} job(s), est."
            f" ${waiting['estimated_cost']:.2f} (judge their looks: raybatch review {quoted})"
        )
    if held["jobs"]:
        lines.append(
            f"held by a rejected look: {held['jobs']} job(s), est. ${held['estimated_cost']:.2f}"
            f" not spent (a new take: raybatch reroll {quoted})"
        )
    return lines


def sources_summary(plan: Plan) -> dict[str, Any]:
    """The sources left out (with why) and those whose jobs are another's (same bytes)."""
    return {
        "skipped": [dataclasses.asdict(s) for s in plan.skipped],
        "duplicates": [dataclasses.asdict(d) for d in plan.duplicates],
    }


def clips_summary(clips: Sequence[ClipFacts]) -> list[dict[str, Any]]:
    """Each source as ``plan --clips --json`` shows it."""
    return [dataclasses.asdict(c) for c in clips]


def format_clips(clips: Sequence[dict[str, Any]]) -> list[str]:
    """``plan --clips`` as text: per source its facts, renders and warnings."""
    lines = [f"clips ({len(clips)}):"] if clips else []
    for clip in clips:
        facts = [clip["kind"]]
        if clip["duration"] is not None:
            facts.append(f"{clip['duration']:.1f} s")
        if clip["width"] and clip["height"]:
            facts.append(f"{clip['width']}×{clip['height']}")
        if clip["kind"] == "video":
            fps, rotation, audio = clip["fps"], clip["rotation"], clip["audio"]
            facts.append("fps not measured" if fps is None else f"{fps:g} fps")
            facts.append("rotation not measured" if rotation is None else f"rotation {rotation}°")
            facts.append(
                "audio not measured" if audio is None else "audio" if audio else "no audio"
            )
        lines.append(f"  {clip['id']}  {clip['path']}  " + ", ".join(facts))
        for render in clip["renders"]:
            usd = "unpriced" if render["usd"] is None else f"${render['usd']:.2f}"
            name = render["endpoint"].rsplit("/", 1)[-1]
            lines.append(
                f"      {name}: {render['jobs']} job(s), renders {render['rendered']},"
                f" billed {render['billed']}, {usd}"
            )
        lines += [f"      ! {warning}" for warning in clip["warnings"]]
    return lines


def clip_warnings(plan: Plan, limit: int = 10) -> list[str]:
    """The warnings of the plan's sources, one line each, at most ``limit`` lines (then how
    many more and where to see them): what ``run`` says before it starts."""
    lines = [f"{c.id} ({c.path}): {w}" for c in plan.clips for w in c.warnings]
    if len(lines) > limit:
        more = len(lines) - limit
        lines = [*lines[:limit], f"... and {more} more (raybatch plan --clips lists them)"]
    return lines


def source_notes(plan: Plan | dict[str, Any]) -> list[str]:
    """One line per source left out and per duplicate source (``plan``, ``run``,
    ``status``), from a plan or from its summary."""
    summary = sources_summary(plan) if isinstance(plan, Plan) else plan
    lines = [f"left out {s['path']} ({s['field']}): {s['reason']}" for s in summary["skipped"]]
    lines += [
        f"{d['path']} holds the same bytes as {d['same_as_path']}: its {d['jobs']} job(s) are"
        f" {d['same_as']}'s (uploaded, rendered and paid once)"
        for d in summary["duplicates"]
    ]
    return lines


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
            " not counted; add a `prices:` row, in the manifest or a --prices file, to count"
            " them)"
        )
    lines += format_segments(summary.get("segmented", []))
    lines.extend(_verdict_lines(summary.get("verdicts"), summary["manifest"]))
    notes = source_notes(summary)
    if notes:
        lines.append("sources:")
        lines += [f"  {note}" for note in notes]
    lines += format_clips(summary.get("clips", []))
    if summary.get("warnings") and not summary.get("clips"):
        lines.append("warnings (plan --clips shows every clip's facts):")
        lines += [f"  ! {warning}" for warning in summary["warnings"]]
    if summary["limits"]:
        lines.append("limits applied:")
        for limit in summary["limits"]:
            value = limit["value"]
            if isinstance(value, list | tuple):
                shown = ", ".join(value)
            else:
                shown = f"{value:,.0f}" if float(value).is_integer() else f"{value:g}"
            mine = " (yours)" if limit.get("user") else ""
            lines.append(
                f"  {limit['endpoint']}  {limit['name']}={shown}{mine}"
                f"  [{limit['source']}, {limit.get('date') or 'undated'}]"
            )
    return "\n".join(lines)


def status_summary(
    plan: Plan,
    store: StateStore | None,
    *,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    output_dir: Path | None = None,
) -> dict[str, Any]:
    """What ``status`` shows: counts per endpoint and state, failures by reason, spend.

    ``only``, ``exclude`` and ``output_dir`` are the options ``status`` was given; the retry
    command repeats them so that it retries exactly the jobs shown.
    """
    table: dict[str, Counter[str]] = defaultdict(Counter)
    failures: dict[tuple[str, str], dict[str, Any]] = {}
    remaining = 0.0
    last_update: float | None = None
    c = plan.columns
    if store is not None and store.holds_exactly(plan.identity, len(plan)):
        # The table is this plan: SQLite counts it (100k jobs: 0.1 s instead of 0.5 s).
        for endpoint, state, count, usd, _lost, _billed, updated in store.endpoint_tallies():
            table[endpoint][state] += count
            if state in (JobState.PENDING, JobState.BLOCKED):
                remaining += usd
            last_update = max(last_update or updated, updated)
    else:
        tallies = store.tallies() if store is not None else {}
        for key, endpoint, cost in zip(c.keys, c.endpoints, c.costs, strict=True):
            row = tallies.get(key)
            state = row.state if row else JobState.PENDING
            table[endpoint][state] += 1
            if state in (JobState.PENDING, JobState.BLOCKED):
                remaining += cost or 0.0
            if row is not None and (last_update is None or row.updated_at > last_update):
                last_update = row.updated_at
    spend = store.spend() if store is not None else None
    if store is not None:
        failed_rows = store.rows_in((JobState.FAILED, JobState.CANCELLED))
        wanted = set(c.keys) if failed_rows else set()
        for failed in failed_rows:
            if failed.key in wanted:
                _add_failure(failures, failed)
    total = Counter[str]()
    for counts in table.values():
        total.update(counts)
    retry = None
    if failures:
        words = ["raybatch", "run", str(plan.manifest_path), "--retry-failed"]
        if output_dir is not None:
            words += ["--output-dir", str(output_dir)]
        words += [w for pattern in only for w in ("--only", pattern)]
        words += [w for pattern in exclude for w in ("--exclude", pattern)]
        retry = shlex.join(words)
    return {
        "name": plan.facts.name,
        "output_dir": str(plan.output_dir),
        "jobs": len(plan),
        "by_endpoint": {k: {s: v[s] for s in STATES if v[s]} for k, v in table.items()},
        "total": {s: total[s] for s in STATES if total[s]},
        "done": total["done"],
        "in_flight": sum(total[s] for s in STATES if JobState(s).in_flight or s == "completed"),
        "failures": sorted(failures.values(), key=lambda g: (-int(g["count"]), g["reason"])),
        "ambiguous_submits": spend.ambiguous if spend else 0,
        "estimated_spend": round(spend.usd, 4) if spend else 0.0,
        "paid_submissions": spend.paid_attempts if spend else 0,
        "resubmitted": spend.resubmitted if spend else 0,
        "estimated_remaining": round(remaining, 4),
        "billable_units": round(spend.billable_units, 4) if spend else 0.0,
        "last_update": last_update,
        "retry_command": retry,
        "state_file": str(Path(plan.output_dir) / "state.db") if store is not None else None,
        "manifest": str(plan.manifest_path),
        "verdicts": _verdicts(plan, store),
        **sources_summary(plan),
    }


#: Request ids and other long hex runs differ between jobs that failed for the same reason.
_VARYING = re.compile(
    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b|\b[0-9a-f]{16,}\b"
)

#: What to do about a failure class before retrying it, when retrying as-is cannot help.
_ADVICE = {
    "ContentModerated": "fal's moderation refused these: change the prompt or the clip"
    " (a changed prompt is a new job; retrying unchanged fails the same way)",
    "InputRejected": "fal refused the input: fix it in the manifest (retrying unchanged fails"
    " the same way)",
    "UnsafeOutput": "the result named a file raybatch refuses to write; see the reason",
    "Cancelled": "cancelled by `raybatch cancel`",
    "SubmitUnconfirmed": "check fal's dashboard for a request that may have been billed",
    "LocalFileError": "a local source could not be read: put it back (or point the manifest"
    " at its new place), then retry",
    "OutputMissing": "fal no longer serves these results: `--rerender` renders them again"
    " (billed again)",
}


def _add_failure(failures: dict[tuple[str, str], dict[str, Any]], row: JobRow) -> None:
    cls = row.error_class or row.state
    message = _VARYING.sub("…", (row.error or "").strip())
    group = failures.setdefault(
        (cls, message),
        {
            "reason": f"{cls}: {message}" if message else cls,
            "class": cls,
            "kind": row.error_kind,
            "advice": _ADVICE.get(cls),
            "count": 0,
            "jobs": [],
        },
    )
    group["count"] += 1
    group["jobs"].append(
        {
            "key": row.key,
            "clip": row.clip,
            "prompt": row.prompt,
            "labels": row.labels,
            "label": job_label(row.endpoint, row.clip, row.prompt, row.labels),
            "request_id": row.request_id,
        }
    )


def human_size(n: float) -> str:
    """A byte count for people: ``512 B``, ``12.3 KiB``, ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # pragma: no cover - the loop always returns


def _job_label(job: dict[str, Any]) -> str:
    return str(job["label"])


def format_status(summary: dict[str, Any]) -> str:
    """``status`` as text: a table per endpoint and state, failures by reason, spend, retry."""
    lines = [f"{summary['name']}: {summary['jobs']} job(s) in {summary['output_dir']}"]
    if summary["state_file"] is None:
        lines.append("  nothing has run yet")
    elif summary["last_update"] is not None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary["last_update"]))
        lines.append(f"  last change {stamp}")
    shown = [s for s in STATES if s in summary["total"]] or ["pending"]
    width = max([len("endpoint"), len("total"), *map(len, summary["by_endpoint"])])
    lines.append(f"  {'endpoint':<{width}} " + " ".join(f"{s:>9}" for s in [*shown, "jobs"]))
    for name, counts in [*summary["by_endpoint"].items(), ("total", summary["total"])]:
        cells = [counts.get(s, 0) for s in shown] + [sum(counts.values())]
        lines.append(f"  {name:<{width}} " + " ".join(f"{c:>9}" for c in cells))
    lines.append(
        f"  spent ${summary['estimated_spend']:.2f} (estimated: every submission fal accepted"
        f" or may have, {summary['paid_submissions']} in all"
        + (f", {summary['resubmitted']} of them paid again" if summary["resubmitted"] else "")
        + f"); still to run: ${summary['estimated_remaining']:.2f};"
        f" billable units reported by fal: {summary['billable_units']:g}"
    )
    if summary["ambiguous_submits"]:
        lines.append(
            f"  ambiguous submits (answer lost; may have been billed twice):"
            f" {summary['ambiguous_submits']}"
        )
    if summary["failures"]:
        failed = sum(g["count"] for g in summary["failures"])
        lines.append(f"failures ({failed}):")
    for group in summary["failures"]:
        jobs = ", ".join(_job_label(j) for j in group["jobs"][:FAILURES_LISTED])
        more = group["count"] - FAILURES_LISTED
        lines.append(f"  {group['count']} × {group['reason']}")
        lines.append(f"      {jobs}" + (f" and {more} more" if more > 0 else ""))
        if group["advice"]:
            lines.append(f"      → {group['advice']}")
    lines.extend(_verdict_lines(summary.get("verdicts"), summary["manifest"]))
    if summary["retry_command"]:
        lines.append(f"retry the failed jobs: {summary['retry_command']}")
    notes = source_notes(summary)
    if notes:
        lines.append("sources:")
        lines += [f"  {note}" for note in notes]
    return "\n".join(lines)
