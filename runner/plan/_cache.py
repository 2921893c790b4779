"""Plans remembered on disk, so ``status``, ``plan`` and a resumed ``run`` skip re-planning.

Expanding a 100k-job manifest costs seconds: reading the YAML, validating every distinct
input, a sha256 per job, and hashing every local clip's bytes. All of it is a function of
the manifest's bytes, raybatch's code, and the local files and glob matches the manifest
names, so the expanded plan is stored under a fingerprint of the first two and used again
only while each of the others provably holds the same bytes (see :func:`_unchanged`) and
every glob matches the same files. A cache may only skip work: it never decides a key.

Entries live in ``$XDG_CACHE_HOME/raybatch/plans/`` (``~/.cache/...``), owner-only, the
newest :data:`KEEP` kept. They hold the manifest's prompts and arguments, never a key.
Everything here is best effort: an unreadable, stale or corrupt entry is a miss, and a
failed write only costs the next command a re-plan.

Format: ``marshal`` records (fast to load; Python-version specific, hence the version in
the fingerprint), each after its length and sha256. The first holds what ``status`` needs
(facts, inputs, keys, endpoints, prices) and the entry's token, which the second repeats:
the rest is read later, maybe hours later (``raybatch review``), and an entry re-planned
under the same name meanwhile must not lend its columns to the first one's keys. The
third holds the facts of each clip, read only when shown (``plan --clips``, the run's
warnings: at 100k jobs they were 5 MB of every run's memory); then one record per other
column of the jobs, read only when the jobs themselves are. A record per column, written
and read one at a time, keeps one column's bytes in memory, not the whole entry's (21 MB
at 100k jobs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import marshal
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from .. import __version__
from ..job import LocalFile
from ._jobs import JobColumns, one_of_each
from ._plan import (
    ClipFacts,
    DuplicateSource,
    ManifestFacts,
    Plan,
    PlanInputs,
    SegmentedClip,
    SkippedSource,
    glob_files,
    output_dir_for,
)

if TYPE_CHECKING:
    from ..endpoints import Overrides

FORMAT = 6
#: Entries kept; each is about 150 bytes per job.
KEEP = 16
_NOT_PLANNING = frozenset({"emulator", "__pycache__"})
#: Columns in an entry's second record (read when the jobs themselves are).
_REST_COLUMNS = (
    "arguments",
    "outputs",
    "files",
    "labels",
    "parents",
    "takes",
    "weights",
    "gates",
)
#: The records after the head and the clip facts, in order.
_REST_RECORDS = (*_REST_COLUMNS, "local")
#: A file modified this close to (or after) its plan was remembered is hashed again on use:
#: ext4 stamps times from a clock that ticks every few ms, other filesystems every 1-2 s.
RACY_SECONDS = 2.0
_DIGEST = 32  # each record is preceded by its sha256: a damaged entry is a miss
_MAX_MANIFEST_BYTES = 64 * 2**20  # what manifest.py accepts; a larger one is refused there


def cache_dir() -> Path:
    """Where remembered plans live."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "raybatch" / "plans"


def cached_plan(
    path: Path,
    *,
    output_dir: Path | None = None,
    only: Sequence[str] = (),
    exclude: Sequence[str] = (),
    probe_remote: bool = False,
    overrides: Overrides | None = None,
    skip_bad: bool = False,
    extra_takes: Mapping[str, int] | None = None,
) -> Plan:
    """``manifest.plan`` with the expansion remembered (see the module docstring).

    ``probe_remote`` plans asks the network, whose answers can change: never remembered.
    ``overrides`` (a --prices file's rows) and ``extra_takes`` (rerolls) make jobs, so
    their values are part of the fingerprint.
    """
    fingerprint = None if probe_remote else _fingerprint(path, overrides, extra_takes)
    whole = _load(fingerprint, path, output_dir, overrides, extra_takes) if fingerprint else None
    if whole is None:
        from ..manifest import plan

        whole = plan(
            path,
            output_dir=output_dir,
            probe_remote=probe_remote,
            overrides=overrides,
            skip_bad=skip_bad,
            extra_takes=extra_takes,
        )
        if fingerprint is not None and not whole.inputs.volatile:
            _store(fingerprint, whole)
            whole.fingerprint = fingerprint
    return whole.selected(only, exclude)


def _fingerprint(
    path: Path, overrides: Overrides | None = None, extra_takes: Mapping[str, int] | None = None
) -> str | None:
    """What the plan is a function of, besides the inputs checked on load; None if the
    manifest is not a plain readable file (planning it reports why)."""
    try:
        with open(path, "rb", opener=_regular_only) as handle:
            if os.fstat(handle.fileno()).st_size > _MAX_MANIFEST_BYTES:
                return None
            # Read to its end, then bounded: read(64 MiB) would allocate 64 MiB first.
            manifest = handle.read()
    except OSError:
        return None
    if len(manifest) > _MAX_MANIFEST_BYTES:
        return None
    digest = hashlib.sha256()
    for part in (str(FORMAT), __version__, sys.version, _code_stamp(), os.path.realpath(path)):
        digest.update(part.encode() + b"\0")
    digest.update(manifest)
    if overrides:
        digest.update(b"\0prices\0" + overrides.digest().encode())
    if extra_takes:
        digest.update(b"\0takes\0" + json.dumps(sorted(extra_takes.items())).encode())
    return digest.hexdigest()


def _regular_only(name: str, flags: int) -> int:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; then refuse anything not a file.
    fd = os.open(name, flags | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError("not a regular file")
    return fd


def _code_stamp() -> str:
    """raybatch's code as installed (every module but the emulator's, by size and mtime):
    an edited checkout must not reuse old plans."""
    root = Path(__file__).parent.parent
    parts = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if d not in _NOT_PLANNING)
        for name in files:
            if name.endswith(".py"):
                info = os.stat(os.path.join(directory, name))
                where = os.path.relpath(os.path.join(directory, name), root)
                parts.append(f"{where}:{info.st_size}:{info.st_mtime_ns}")
    return ",".join(sorted(parts))


def _entry(fingerprint: str) -> Path:
    return cache_dir() / f"{fingerprint}.plan"


def _load(
    fingerprint: str,
    path: Path,
    output_dir: Path | None,
    overrides: Overrides | None,
    extra_takes: Mapping[str, int] | None,
) -> Plan | None:
    entry = _entry(fingerprint)
    try:
        with open(entry, "rb") as handle:
            head = _record(handle)
            if head.get("format") != FORMAT or not _unchanged(head["inputs"], head["made_at"]):
                return None
            offset = handle.tell()
    except FileNotFoundError:
        return None
    except Exception:
        # Whatever the damage (truncated, garbled, an old layout): a miss, and gone.
        with contextlib.suppress(OSError):
            entry.unlink()
        return None
    facts = ManifestFacts(**head["facts"])

    def replan() -> JobColumns:
        from ..manifest import plan

        return plan(path, overrides=overrides, extra_takes=extra_takes).columns

    columns = _LazyColumns(head, _Rest(entry, offset, head["token"], replan))
    with contextlib.suppress(OSError):
        os.utime(entry)  # recently used: pruned last
    return Plan(
        path,
        output_dir_for(path, facts, output_dir),
        facts,
        head["limits"],
        columns=columns,
        inputs=PlanInputs(tuple(f[:5] for f in head["inputs"][0]), head["inputs"][1]),
        fingerprint=fingerprint,
        output_dir_given=output_dir is not None,
        segmented=[SegmentedClip.from_row(row) for row in head["segmented"]],
        skipped=[SkippedSource(*row) for row in head["skipped"]],
        duplicates=[DuplicateSource(*row) for row in head["duplicates"]],
        clips=lambda: [ClipFacts.from_row(row) for row in columns.clip_rows()],
    )


def _record(handle: BinaryIO) -> Any:
    """The next record as written by ``_write_record``; ValueError if damaged."""
    size = int.from_bytes(handle.read(8), "little")
    digest = handle.read(_DIGEST)
    # marshal.load(file) reads object by object; one read and loads() is ~15x faster.
    data = handle.read(size)
    if len(data) != size or hashlib.sha256(data).digest() != digest:
        raise ValueError("damaged plan cache record")
    return marshal.loads(data)


def _skip_record(handle: BinaryIO) -> None:
    """Move past the next record without reading it."""
    handle.seek(_DIGEST + int.from_bytes(handle.read(8), "little"), os.SEEK_CUR)


def _write_record(handle: BinaryIO, value: Any) -> None:
    """``value`` as the next record: its length, its sha256, its marshal bytes."""
    data = marshal.dumps(value)
    handle.write(len(data).to_bytes(8, "little"))
    handle.write(hashlib.sha256(data).digest())
    handle.write(data)


def _unchanged(inputs: Any, made_at: float) -> bool:
    """Whether every file the plan read still holds the bytes it hashed, and every glob
    matches the same files.

    A file whose size, mtime, ctime and inode are as recorded is trusted only if its mtime
    is older than the entry by more than a timestamp's granularity; one rewritten within
    the same tick as its hashing would otherwise look unchanged ("racily clean", as git
    calls it). Those, and any file whose metadata moved, are hashed again: the plan holds
    while the bytes are the same.
    """
    files, globs = inputs
    for shown, real, size, mtime_ns, sha256, inode, ctime_ns in files:
        try:
            if os.path.realpath(shown) != real:
                return False
            info = os.stat(real)
        except OSError:
            return False
        if info.st_size != size:
            return False
        same = (info.st_mtime_ns, info.st_ctime_ns, info.st_ino) == (mtime_ns, ctime_ns, inode)
        racy = info.st_mtime_ns >= (made_at - RACY_SECONDS) * 1e9
        if (not same or racy) and _sha256(real) != sha256:
            return False
    return all(tuple(glob_files(pattern)) == tuple(matches) for pattern, matches in globs)


def _sha256(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _identities(files: Sequence[tuple[str, str, int, int, str]]) -> list[tuple[Any, ...]]:
    """Each file's record with the inode and ctime it has now (next to its hash-time size,
    mtime and sha256): a change since then shows in them, or in the racy check."""
    found = []
    for shown, real, size, mtime_ns, sha256 in files:
        try:
            info = os.stat(real)
        except OSError:
            inode, ctime_ns = -1, -1  # gone already: the entry will be a miss
        else:
            inode, ctime_ns = info.st_ino, info.st_ctime_ns
        found.append((shown, real, size, mtime_ns, sha256, inode, ctime_ns))
    return found


class _Rest:
    """The records after an entry's head, read on first use (a ``status`` needs none)."""

    def __init__(
        self, entry: Path, offset: int, token: str, replan: Callable[[], JobColumns]
    ) -> None:
        self.entry = entry
        self.offset = offset
        self.token = token
        self.replan = replan

    def _open(self) -> BinaryIO:
        """The entry at the clip facts, once its token says it is the head's entry."""
        handle = open(self.entry, "rb")  # noqa: SIM115 - returned to a with statement
        try:
            handle.seek(self.offset)
            if _record(handle) != self.token:
                raise ValueError("the plan cache entry was replaced since its head was read")
        except BaseException:
            handle.close()
            raise
        return handle

    def read(self) -> dict[str, Any]:
        """The jobs' other columns; if gone or damaged since the head was read, the
        manifest is planned afresh."""
        try:
            with self._open() as handle:
                _skip_record(handle)  # the clip facts
                return {name: _record(handle) for name in _REST_RECORDS}
        except Exception:
            return _rest_record(self.replan())

    def clip_rows(self) -> list[Any]:
        """Each clip's facts as stored (``ClipFacts`` tuples); none if gone or damaged
        since the head was read."""
        try:
            with self._open() as handle:
                rows: list[Any] = _record(handle)
            return rows
        except Exception:
            return []


class _LazyColumns(JobColumns):
    """Columns whose heavy part (arguments, outputs, files, labels) loads on first access."""

    def __init__(self, head: dict[str, Any], rest: _Rest) -> None:
        object.__setattr__(self, "_rest", rest)
        object.__setattr__(self, "keys", head["keys"])
        object.__setattr__(self, "endpoints", head["endpoints"])
        object.__setattr__(self, "costs", head["costs"])
        object.__setattr__(self, "clips", head["clips"])
        object.__setattr__(self, "prompts", head["prompts"])

    def __getattr__(self, name: str) -> Any:
        # Only called for attributes not set yet: the second record's columns.
        if name not in _REST_COLUMNS and name != "local_files":
            raise AttributeError(name)
        rest = self.__dict__["_rest"].read()
        local = {sha: LocalFile(Path(p), sha, *more) for sha, (p, *more) in rest["local"].items()}
        for column in _REST_COLUMNS:
            object.__setattr__(self, column, rest[column])
        object.__setattr__(self, "local_files", local)
        return getattr(self, name)

    def clip_rows(self) -> list[Any]:
        """The plan's clip facts as stored (``ClipFacts`` tuples), from the third record."""
        rest: _Rest = self.__dict__["_rest"]
        return rest.clip_rows()


def _store(fingerprint: str, plan: Plan) -> None:
    columns = plan.columns
    head = {
        "format": FORMAT,
        "facts": {
            "name": plan.facts.name,
            "output_dir": plan.facts.output_dir,
            "concurrency": plan.facts.concurrency,
            "max_cost": plan.facts.max_cost,
            "prompts": dict(plan.facts.prompts),
            "on_bad_source": plan.facts.on_bad_source,
            "confirm_above": plan.facts.confirm_above,
        },
        "skipped": [dataclasses.astuple(s) for s in plan.skipped],
        "duplicates": [dataclasses.astuple(d) for d in plan.duplicates],
        "limits": plan.limits_applied,
        "segmented": [dataclasses.astuple(clip) for clip in plan.segmented],
        "inputs": (_identities(plan.inputs.files), plan.inputs.globs),
        "made_at": time.time(),
        "token": os.urandom(8).hex(),
        "keys": columns.keys,
        "endpoints": columns.endpoints,
        "costs": columns.costs,
        "clips": columns.clips,
        "prompts": columns.prompts,
    }
    clip_facts = [dataclasses.astuple(c) for c in plan.clips]
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".plan-")  # created 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                _write_record(handle, head)
                _write_record(handle, head["token"])
                _write_record(handle, clip_facts)
                rest = _rest_record(columns)
                for name in _REST_RECORDS:
                    _write_record(handle, rest[name])
            os.replace(tmp, _entry(fingerprint))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _prune(folder)
    except (OSError, ValueError):
        # ValueError: marshal met a value it cannot write (an exotic YAML value); the plan
        # is simply not remembered.
        pass


def _rest_record(columns: JobColumns) -> dict[str, Any]:
    """What a job needs beyond what ``status`` reads, by record name (``_REST_RECORDS``)."""
    return {
        "arguments": columns.arguments,
        "outputs": columns.outputs,
        "files": columns.files,
        "labels": columns.labels,
        "parents": columns.parents,
        "takes": columns.takes,
        # One float object per distinct weight: marshal then writes the rest as references,
        # and loading shares them (100k separate floats were 3 MB of every resumed run).
        "weights": one_of_each(columns.weights),
        "gates": columns.gates,
        "local": {
            sha: (str(f.path), f.size, f.content_type, f.real, f.mtime_ns)
            for sha, f in columns.local_files.items()
        },
    }


def _prune(folder: Path) -> None:
    entries = sorted(folder.glob("*.plan"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        with contextlib.suppress(OSError):
            old.unlink()
