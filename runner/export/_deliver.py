"""A delivery folder: the chosen takes under clean names, a delivery list, a timeline.

Chosen are the plan's final outputs (not looks, not intermediate steps) that are done and,
with ``approved``, approved in ``raybatch review``. Each file is hard-linked from the
output directory (no copy, no extra space) or copied where a link cannot be made
(another file system, say), after checking its bytes against the sha256 the state
recorded. Names are ``<clip>-<prompt>[-<matrix values>]-take<N><ext>``, the same on
every export of the plan. Running the same export again changes nothing; a name already
taken in the folder by a different file is an error, and nothing is written at all.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, Literal

from ..errors import DiskError, ManifestError, PermanentError
from ..job import LOOK, JobSpec, take_group
from ..media import MediaError, local_file, probe
from ..outputs import LocalSink
from ..plan import Plan
from ..state import APPROVED, JobRow, JobState, StateStore
from ._timeline import Shot, write_timeline

Choice = Literal["approved", "all-done"]
LIST_CSV = "delivery.csv"
LIST_JSON = "delivery.json"
TIMELINE = "timeline.otio"
#: OS errors that mean "a hard link cannot be made here": copy instead.
_NO_LINK = frozenset(
    {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EACCES}
)


@dataclass
class Delivered:
    """One delivered file, as the delivery list describes it."""

    file: str
    source: str | None
    clip: str | None
    prompt: str | None
    prompt_text: str | None
    matrix: dict[str, Any]
    take: int
    endpoint: str
    key: str
    sha256: str
    size: int
    cost: float
    estimated_cost: float | None
    verdict: str | None
    note: str | None
    request_id: str | None
    duration: float | None


@dataclass
class ExportResult:
    """What an export did: every file of the delivery, and how it got there."""

    folder: Path
    files: list[Delivered] = field(default_factory=list)
    linked: int = 0
    copied: int = 0
    unchanged: int = 0
    timeline: Path | None = None
    lists: tuple[Path, ...] = ()
    #: Done outputs not delivered because nobody approved them (with ``approved``).
    not_approved: int = 0


@dataclass(frozen=True)
class _Planned:
    """One file to deliver: where it is, where it goes, and what the list says of it."""

    src: Path
    target: Path
    row: Delivered
    shot: Shot | None


def export(
    plan: Plan, store: StateStore | None, folder: Path, *, choose: Choice = "approved"
) -> ExportResult:
    """Deliver ``plan``'s chosen takes into ``folder`` (see the module docstring)."""
    if store is None:
        raise ManifestError(f"nothing has run in {plan.output_dir} yet: there is nothing to export")
    folder = folder.absolute()
    if folder == plan.output_dir or plan.output_dir in folder.parents:
        raise ManifestError(f"usage: --to {folder} is inside the output directory; choose another")
    rows = {row.key: row for row in store.rows(plan.keys, results=False)}
    spend = store.spend_by_job()
    finals = _finals(plan)
    names = _names(plan, finals)
    sources = _sources(plan)
    result = ExportResult(folder)
    planned: list[_Planned] = []
    sink = LocalSink(plan.output_dir)
    for i in finals:
        spec = plan.jobs[i]
        row = rows.get(spec.key)
        if row is None or row.state is not JobState.DONE or not row.outputs:
            continue
        if choose == "approved" and row.verdict != APPROVED:
            result.not_approved += 1
            continue
        cost = sum(spend.get(key, (0.0, 0))[0] for key in _lineage(plan, spec.key))
        planned.extend(_files(plan, spec, row, names[i], folder, sources, cost, sink))
    _check_clashes(planned)
    folder.mkdir(parents=True, exist_ok=True)
    for item in planned:
        how = _deliver(item.src, item.target)
        setattr(result, how, getattr(result, how) + 1)
        result.files.append(item.row)
    result.lists = _write_lists(folder, result.files)
    shots = [item.shot for item in planned if item.shot is not None]
    result.timeline = write_timeline(folder / TIMELINE, plan.facts.name, shots, write_atomic)
    return result


def _finals(plan: Plan) -> list[int]:
    """Indices of the plan's final outputs: jobs no other job takes, and no looks."""
    columns = plan.columns
    parents = {key for keys in columns.parents for key in keys}
    return [
        i
        for i, key in enumerate(columns.keys)
        if key not in parents and columns.labels[i].get("role") != LOOK
    ]


def _names(plan: Plan, finals: Sequence[int]) -> dict[int, str]:
    """A clean, stable base name per final output; the same name twice in the plan (two
    entries alike but for their input) gets the key's first characters too."""
    columns = plan.columns
    base = {}
    for i in finals:
        group = take_group(columns.clips[i], columns.prompts[i], columns.labels[i])
        base[i] = _clean(group) + f"-take{columns.takes[i]}"
    twice = Counter(base.values())
    return {
        i: name + (f"-{columns.keys[i][:8]}" if twice[name] > 1 else "") for i, name in base.items()
    }


def _clean(group: str) -> str:
    """``city/noir[edit_strength=flex_1]`` → ``city-noir-flex_1``."""
    head, _, matrix = group.partition("[")
    parts = head.split("/") + [v.partition("=")[2] for v in matrix.rstrip("]").split(",") if v]
    cleaned = [
        "".join(c if c.isalnum() or c in "._" else "_" for c in p).strip("._") for p in parts
    ]
    return "-".join(p for p in cleaned if p and p != "-") or "output"


def _lineage(plan: Plan, key: str) -> set[str]:
    """``key`` and every job it was made from (its look, its segments...)."""
    parents = dict(zip(plan.columns.keys, plan.columns.parents, strict=True))
    found: set[str] = set()
    stack = [key]
    while stack:
        current = stack.pop()
        if current not in found:
            found.add(current)
            stack.extend(parents.get(current, ()))
    return found


def _sources(plan: Plan) -> dict[str, tuple[str, Path | None]]:
    """clip id → (its source as the manifest names it, its local path if it has one)."""
    found: dict[str, tuple[str, Path | None]] = {}
    for spec in plan.jobs:
        if spec.clip is None or spec.clip in found:
            continue
        for value in spec.arguments.values():
            if not isinstance(value, str):
                continue
            local = (
                spec.files.get(value.removeprefix("@local:"))
                if value.startswith("@local:")
                else None
            )
            if local is not None:
                found[spec.clip] = (str(local.path), local.path)
                break
            if value.startswith(("http://", "https://")):
                found[spec.clip] = (value, None)
                break
    return found


def _files(
    plan: Plan,
    spec: JobSpec,
    row: JobRow,
    name: str,
    folder: Path,
    sources: Mapping[str, tuple[str, Path | None]],
    cost: float,
    sink: LocalSink,
) -> list[_Planned]:
    """The delivered files of one job (its main output, and any other, an EXR say)."""
    planned: list[_Planned] = []
    used: set[str] = set()
    source, source_path = sources.get(spec.clip or "", (None, None))
    for n, output in enumerate(row.outputs):
        relative = str(output["path"])
        stamp = output.get("mtime_ns")
        problem = sink.check(
            relative,
            int(output["size"]),
            str(output["sha256"]),
            mtime_ns=None if stamp is None else int(stamp),
            full=False,
        )
        if problem is not None:
            raise PermanentError(
                f"{spec.label}: {problem}; `raybatch run` downloads it again, then export"
            )
        ext = PurePosixPath(relative).suffix
        target = name + ext if ext not in used else f"{name}.{output.get('field', n)}{ext}"
        used.add(ext)
        src = plan.output_dir / relative
        duration = _duration(src) if n == 0 else None
        delivered = Delivered(
            file=target,
            source=source,
            clip=spec.clip,
            prompt=spec.prompt,
            prompt_text=plan.facts.prompts.get(spec.prompt or ""),
            matrix={k: v for k, v in spec.labels.items() if k != "role"},
            take=spec.take,
            endpoint=spec.endpoint,
            key=spec.key,
            sha256=str(output["sha256"]),
            size=int(output["size"]),
            cost=round(cost, 6),
            estimated_cost=spec.estimated_cost,
            verdict=row.verdict,
            note=row.note,
            request_id=row.request_id,
            duration=duration,
        )
        shot = None
        if n == 0 and spec.clip is not None:
            shot = Shot(
                clip=spec.clip,
                variant=take_group(None, spec.prompt, delivered.matrix).removeprefix("-/"),
                take=spec.take,
                file=folder / target,
                file_duration=duration,
                source=source_path,
                source_url=source,
                metadata={"key": spec.key, "sha256": delivered.sha256, "take": spec.take},
            )
        planned.append(_Planned(src, folder / target, delivered, shot))
    return planned


def _duration(path: Path) -> float | None:
    try:
        return probe(path).duration
    except MediaError:
        return None


def _check_clashes(planned: Sequence[_Planned]) -> None:
    """Refuse before writing anything: a target taken by a file with other bytes."""
    clashes = []
    for item in planned:
        try:
            if item.target.samefile(item.src):
                continue
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise DiskError(f"cannot read {item.target}: {exc.strerror or exc}") from exc
        if local_file(item.target).sha256 != item.row.sha256:
            clashes.append(str(item.target))
    if clashes:
        shown = ", ".join(clashes[:5]) + (
            f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        )
        raise ManifestError(
            f"{shown} already exist(s) with other content; nothing was written or"
            " overwritten (move them away, or export --to another folder)"
        )


def _deliver(src: Path, target: Path) -> Literal["linked", "copied", "unchanged"]:
    """Put ``src`` at ``target``: already there (same file or same bytes), a hard link,
    or a copy (written aside, fsynced, renamed) where a link cannot be made."""
    if target.exists():
        return "unchanged"  # checked by _check_clashes: the same file, or the same bytes
    try:
        os.link(src, target)
        return "linked"
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise DiskError(f"cannot link {target}: {exc.strerror or exc}") from exc

    def copy(writer: BinaryIO) -> None:
        with open(src, "rb") as reader:
            shutil.copyfileobj(reader, writer, 1024 * 1024)

    write_atomic(target, copy)
    return "copied"


def _write_lists(folder: Path, files: Sequence[Delivered]) -> tuple[Path, Path]:
    """The delivery list as CSV and JSON (rewritten whole, atomically, each export)."""
    rows = [asdict(f) for f in files]
    text = io.StringIO()
    columns = list(Delivered.__dataclass_fields__)
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "matrix": json.dumps(row["matrix"], sort_keys=True)})
    as_csv, as_json = folder / LIST_CSV, folder / LIST_JSON
    write_atomic(as_csv, lambda handle: handle.write(text.getvalue().encode()))
    listed = json.dumps(rows, indent=2) + "\n"
    write_atomic(as_json, lambda handle: handle.write(listed.encode()))
    return as_csv, as_json


def write_atomic(path: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` through a part file that ``fill`` writes, fsynced, then renamed:
    the name never holds half a file."""
    part = path.with_name(path.name + ".part")
    try:
        with open(part, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, path)
    except OSError as exc:
        part.unlink(missing_ok=True)
        raise DiskError(f"cannot write {path}: {exc.strerror or exc}") from exc
