"""The commands that read or keep up a batch without running it — ``status``, ``report``,
``cancel`` and ``verify`` — as the CLI prints them. Each gets the plan ``session.locate``
found (no source file needed, from any working directory); ``cli`` prints its warnings.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Callable
from typing import Any

from . import session
from ._help import EXIT_FAILED, EXIT_OK
from .session import Located


def show(args: argparse.Namespace, summary: dict[str, Any], text: Callable[..., str]) -> int:
    """Print a summary as JSON (``--json``, written as encoded: 100k jobs are ~30 MB of
    text) or as text."""
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print(text(summary))
    return EXIT_OK


def _status(args: argparse.Namespace, located: Located) -> int:
    from .report import format_status

    summary = session.located_status(
        located, only=args.only, exclude=args.exclude, output_dir=args.output_dir
    )
    return show(args, summary, format_status)


def _report(args: argparse.Namespace, located: Located) -> int:
    print(f"wrote {session.report(located.plan)}")
    return EXIT_OK


def _cancel(args: argparse.Namespace, located: Located) -> int:
    plan = located.plan
    fal = session.fal_origin(
        local=args.local, fal_url=args.fal_url, state_dir=plan.output_dir / ".emulator"
    )
    done = session.cancel(plan, fal)
    if done is None or not done.outcomes:
        print(
            "nothing to cancel: "
            + ("no state file yet" if done is None else "no job is unfinished")
        )
        return EXIT_OK
    for o in done.outcomes:
        print(f"{o.label}: {o.note}")
    cancelled = sum(o.cancelled for o in done.outcomes)
    asked = len(done.outcomes) - cancelled
    by = f" by the running raybatch (pid {done.by_run})" if done.by_run else ""
    print(
        f"{cancelled} job(s) marked cancelled{by}, {asked} left to end as fal reports;"
        " `raybatch run --retry-failed` runs cancelled jobs again"
    )
    return EXIT_OK


def _verify(args: argparse.Namespace, located: Located) -> int:
    found = session.verify(located.plan, full=args.full)
    if found is None:
        print("nothing to verify: no state file yet")
        return EXIT_OK
    for label, why in found.damaged:
        print(f"{label}: {why}")
    how = "sha256" if found.full else "size and mtime"
    if not found.damaged:
        print(f"{found.checked} done job(s) checked ({how}): every output is as recorded")
        return EXIT_OK
    manifest = shlex.quote(str(located.plan.manifest_path))
    if found.marked:
        print(
            f"{len(found.damaged)} of {found.checked} done job(s) need fetch: `raybatch run"
            f" {manifest}` downloads them again (not billed while fal still holds the"
            " results); `--rerender` renders them again (billed)"
        )
    else:
        print(
            f"{len(found.damaged)} of {found.checked} done job(s) have missing or altered"
            " outputs; a run holds the directory, so they are not marked: the next"
            " `raybatch run` finds and fetches them"
        )
    return EXIT_FAILED


KEEPERS: dict[str, Callable[[argparse.Namespace, Located], int]] = {
    "status": _status,
    "report": _report,
    "cancel": _cancel,
    "verify": _verify,
}
