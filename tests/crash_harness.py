"""Kill the real CLI over and over across a batch, then prove nothing was lost or paid twice.

The emulator runs in its own process and outlives every runner. Each round starts
``python -m runner run`` and kills it either at a named transition point
(``RAYBATCH_CRASH_AT``, see ``runner/crashpoints.py``) or with SIGKILL after a random
delay. After every kill and at the end the invariants below are checked.

The fast variant runs in the test suite (``tests/test_crash.py``); the long sweep is

    python -m tests.crash_harness --kills 300 --seed 1

and prints one JSON line of figures (kills, duplicates, lost or corrupt files). With
``--long`` every batch is long clips instead (a 22 s clip with sound under anchor
continuity and a 16 s one under chain, × 2 prompts: prepared cuts, frames, look frames,
start frames, renders and stitches, 33 jobs), so kills also land in local steps
(``after_step``), and a stitched file is checked to be whole wherever one exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runner.crashpoints import POINTS
from runner.job import LOCAL_PREFIX, canonical_json, split_parent_ref, substitute
from runner.media import MediaError, decode_problem, probe

from .conftest import MANIFESTS, Emulator, spawn_cli, start_emulator, stop_emulator
from .media_sources import Clip, make_clip

PROMPTS = 6  # × 3 demo clips = 18 jobs


@dataclass
class SweepReport:
    """Figures of one sweep."""

    jobs: int = 0
    kills: int = 0
    point_kills: dict[str, int] = field(default_factory=dict)
    random_kills: int = 0
    rounds: int = 0
    ambiguous: int = 0
    duplicate_submits: int = 0
    unexplained_duplicates: int = 0
    lost_outputs: int = 0
    corrupt_outputs: int = 0
    leftover_parts: int = 0
    #: Stitched outputs found incomplete under their final name (must stay 0).
    half_written: int = 0
    integrity: str = ""
    violations: list[str] = field(default_factory=list)
    per_batch: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    points_not_reached: list[str] = field(default_factory=list)


#: Jobs in a long-clip batch: per clip its cuts and frames, per clip × prompt the rest.
LONG_JOBS = (3 + 3 + 2 * (1 + 2 + 3 + 1)) + (2 + 1 + 2 * (1 + 2 + 1 + 1))


def write_manifest(
    workdir: Path, batch: int, prompts: int = PROMPTS, *, long: bool = False
) -> Path:
    """A manifest of the three demo clips × ``prompts`` prompts (unique to ``batch``); with
    ``long``, of two generated long clips × 2 prompts (see the module docstring)."""
    media = workdir / "media"
    if not media.exists():
        shutil.copytree(MANIFESTS / "media", media, ignore=shutil.ignore_patterns("*.py"))
        make_clip(media / "talk.mp4", Clip(frames=22 * 24, clicks=[1.0, 12.5], audio_codec="aac"))
        # Another colour: two clips showing the same pictures would make identical inputs.
        make_clip(media / "walk.mp4", Clip(frames=16 * 24, colour=lambda _: (20, 120, 220)))
    clips = "[media/city.mp4, media/beach.mp4, media/forest.mp4]"
    if long:
        clips = "[media/talk.mp4, {path: media/walk.mp4, segments: {continuity: chain}}]"
        prompts = 2
    lines = [
        f"name: crash{batch}",
        "endpoint: luma/agent/ray/v3.2/video-to-video",
        'output: "{clip}/{prompt}.mp4"',
        "concurrency: 4",
        f"clips: {clips}",
        "prompts:",
        *(f'  p{i}: "batch {batch} look {i}, warm sunset colours"' for i in range(prompts)),
    ]
    path = workdir / f"crash{batch}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def emulator_input_hash(arguments: dict[str, Any], outputs: dict[str, str] | None = None) -> str:
    """The emulator's ``input_sha256`` of a job (uploaded files count by their bytes, and
    so does a parent's output: ``outputs`` maps a done job's key to its file's sha256)."""

    def replace(text: str) -> str:
        if text.startswith(LOCAL_PREFIX):
            return "sha256:" + text.removeprefix(LOCAL_PREFIX)
        parent = split_parent_ref(text)
        if parent is not None and outputs is not None and parent[0] in outputs:
            return "sha256:" + outputs[parent[0]]
        return text

    return hashlib.sha256(canonical_json(substitute(arguments, replace)).encode()).hexdigest()


def check(out: Path, emulator: Emulator, report: SweepReport, *, final: bool) -> None:
    """Check the invariants; record violations in ``report``.

    I1 the state loads and passes ``integrity_check``; I2 every ``done`` job's files exist
    with the recorded size and sha256; I3 no input was submitted more often than once plus
    its counted ambiguous submits; at the end also: every job done, every file equal to the
    emulator's bytes, no ``.part`` file left.
    """
    db_path = out / "state.db"
    if not db_path.exists():
        return
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        report.integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        if report.integrity != "ok":
            report.violations.append(f"integrity: {report.integrity}")
        try:
            rows = db.execute("SELECT * FROM jobs").fetchall()
        except sqlite3.OperationalError:
            return  # killed before the schema existed: an empty state is a valid state
    finally:
        db.close()
    stats = emulator.stats()
    submits: dict[str, int] = {}
    served = {}
    for request in stats["requests"]:
        submits[request["input_sha256"]] = submits.get(request["input_sha256"], 0) + 1
        for output in request["outputs"]:
            served[output["url"]] = output
    ambiguous = duplicates = unexplained = 0
    produced = {
        row["key"]: json.loads(row["outputs"])[0]["sha256"]
        for row in rows
        if row["state"] == "done" and json.loads(row["outputs"] or "[]")
    }
    for row in rows:
        check_stitch(out, row, report)
        if row["kind"] == "local":
            n = 0  # a local step: nothing goes to fal
        else:
            n = submits.get(emulator_input_hash(json.loads(row["arguments"]), produced), 0)
        ambiguous += row["ambiguous"]
        duplicates += max(0, n - 1)
        if n > 1 + row["ambiguous"]:
            unexplained += n - 1 - row["ambiguous"]
            report.violations.append(
                f"{row['key'][:12]}: {n} submits, {row['ambiguous']} ambiguous"
            )
        if row["state"] != "done":
            if final:
                report.violations.append(f"{row['key'][:12]}: ended {row['state']}")
            continue
        for output in json.loads(row["outputs"]):
            path = out / output["path"]
            if not path.exists():
                report.lost_outputs += 1
                report.violations.append(f"lost: {output['path']}")
                continue
            data = path.read_bytes()
            remote = served.get(output["url"])
            if (
                len(data) != output["size"]
                or hashlib.sha256(data).hexdigest() != output["sha256"]
                or (remote is not None and remote["sha256"] != output["sha256"])
            ):
                report.corrupt_outputs += 1
                report.violations.append(f"corrupt: {output['path']}")
    report.per_batch[out.name] = (ambiguous, duplicates, unexplained)
    report.ambiguous = sum(v[0] for v in report.per_batch.values())
    report.duplicate_submits = sum(v[1] for v in report.per_batch.values())
    report.unexplained_duplicates = sum(v[2] for v in report.per_batch.values())
    if final:
        parts = len(list(out.rglob("*.part")))
        report.leftover_parts += parts
        if parts:
            report.violations.append(f"{parts} .part file(s) left in {out.name}")


def check_stitch(out: Path, row: sqlite3.Row, report: SweepReport) -> None:
    """A stitched output, wherever it exists (done or not), is a whole file: it decodes to
    its end and lasts as long as its segments keep (a kill after its rename but before
    ``done`` leaves a whole file, which the next run writes again)."""
    if row["endpoint"] != "local/stitch":
        return
    path = out / row["output"]
    if not path.exists():
        return
    segments = json.loads(row["arguments"])["segments"]
    first, last = segments[0], segments[-1]
    expected = last[6] / last[1] - first[5] / first[1]
    try:
        problem = decode_problem(path)
        duration = probe(path).duration or 0.0
    except MediaError as exc:
        problem, duration = exc.reason, 0.0
    if problem is None and abs(duration - expected) > 1 / 24:
        problem = f"lasts {duration:.3f} s, not {expected:.3f} s"
    if problem is not None:
        report.half_written += 1
        report.violations.append(f"half-written stitch {row['output']}: {problem}")


def _run_once(
    manifest: Path,
    out: Path,
    emulator: Emulator,
    target: str | None,
    rng: random.Random,
    timeout: float,
    *,
    kill: bool = True,
) -> tuple[int, str]:
    """One runner process; with ``kill``, killed at ``target`` (a crash point) or, without
    a target, at a random moment. Returns its exit code and stderr."""
    env = {"RAYBATCH_CRASH_AT": target} if target else {}
    runner = spawn_cli(
        "run",
        manifest,
        "--fal-url",
        emulator.url,
        "--output-dir",
        out,
        cwd=manifest.parent,
        env=env,
    )
    if kill and target is None:
        try:
            runner.wait(timeout=rng.uniform(0.5, 3.0))
        except subprocess.TimeoutExpired:
            runner.send_signal(signal.SIGKILL)
    try:
        _, stderr = runner.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        runner.kill()
        _, stderr = runner.communicate()
    return runner.returncode, stderr


def sweep(
    workdir: Path, *, kills: int, seed: int, timeout: float = 120, long: bool = False
) -> SweepReport:
    """Kill runners ``kills`` times (every named point first, then at random moments),
    batch after batch; each batch is then finished and checked. ``long``: batches of long
    clips (see the module docstring).
    """
    rng = random.Random(seed)
    report = SweepReport()
    emulator = start_emulator("--job-seconds", "0.3:1.0", "--seed", str(seed))
    targets: list[str | None] = [f"{p}:{rng.randint(1, 3)}" for p in POINTS]
    targets += [None] * max(0, kills - len(targets))
    batch = 0
    try:
        while targets:
            batch += 1
            manifest = write_manifest(workdir, batch, long=long)
            out = workdir / f"out{batch}"
            report.jobs += LONG_JOBS if long else 3 * PROMPTS
            while targets:
                target = targets[0]
                report.rounds += 1
                code, _ = _run_once(manifest, out, emulator, target, rng, timeout)
                check(out, emulator, report, final=False)
                if code in (-signal.SIGKILL, 137):
                    targets.pop(0)
                    report.kills += 1
                    if target is None:
                        report.random_kills += 1
                    else:
                        point = target.split(":")[0]
                        report.point_kills[point] = report.point_kills.get(point, 0) + 1
                elif code == 0:
                    if target is not None:
                        targets.pop(0)  # that arrival never came in this batch; move on
                        report.points_not_reached.append(target)
                    break  # this batch finished before the kill: start another
                else:
                    report.violations.append(f"round exited {code}")
                    targets.pop(0)
            code, stderr = _run_once(manifest, out, emulator, None, rng, timeout, kill=False)
            if code != 0:
                report.violations.append(f"final run exited {code}: {stderr[-500:]}")
            check(out, emulator, report, final=True)
    finally:
        stop_emulator(emulator)
    return report


def main() -> None:
    """Command line of the long sweep."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--long", action="store_true", help="batches of long clips")
    args = parser.parse_args()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        started = time.monotonic()
        report = sweep(workdir, kills=args.kills, seed=args.seed, long=args.long)
        figures = asdict(report) | {"seconds": round(time.monotonic() - started, 1)}
        print(json.dumps(figures))
        sys.exit(1 if report.violations else 0)


if __name__ == "__main__":
    main()
