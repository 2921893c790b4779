"""The ``review``, ``reroll``, ``export`` and ``show`` commands of the CLI: their options
and how their outcome is printed (kept beside ``cli.py`` for its size; the work is done
by ``runner.session``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import session

if TYPE_CHECKING:
    from .plan import Plan

EXIT_OK = 0


def add_judging_commands(
    manifest_cmd: Callable[[str, str], argparse.ArgumentParser],
    prices_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Add the judging and delivery commands (``manifest_cmd`` makes one taking a manifest)."""
    p = manifest_cmd(
        "review",
        "serve the review page on 127.0.0.1 to approve, reject and note outputs and looks",
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument(
        "--open", action="store_true", help="open the page in the default browser as well"
    )

    p = manifest_cmd(
        "reroll", "one more take for each rejected look or output (those --only selects)"
    )
    prices_option(p)

    p = manifest_cmd("export", "deliver the chosen takes with a delivery list and a timeline")
    p.add_argument("--to", type=Path, required=True, metavar="DIR", help="the delivery folder")
    chosen = p.add_mutually_exclusive_group()
    chosen.add_argument(
        "--approved",
        dest="choose",
        action="store_const",
        const="approved",
        help="the takes approved in raybatch review (the default)",
    )
    chosen.add_argument(
        "--all-done",
        dest="choose",
        action="store_const",
        const="all-done",
        help="every finished output, judged or not",
    )

    p = manifest_cmd("show", "one job's whole story: input, attempts, logs, files, verdicts")
    p.add_argument("job", help="a key prefix, or a label such as city/noir or city/noir/2/look")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _review(args: argparse.Namespace, plan: Plan) -> int:
    def ready(url: str) -> None:
        print(f"reviewing {plan.facts.name} at {url}  (Ctrl-C to stop)", flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(url)

    session.review(plan, only=args.only, exclude=args.exclude, port=args.port, on_ready=ready)
    return EXIT_OK


def _reroll(args: argparse.Namespace, plan: Plan) -> int:
    done = session.reroll(plan)
    if not done.takes:
        print("nothing to roll again: no rejected look or output (not rolled already) selected")
        return EXIT_OK
    for take in done.takes:
        print(f"{take.label}: rolled again as take {take.take}")
    print(
        f"{done.new_jobs} new job(s), est. ${done.new_cost:.2f}:"
        f" `raybatch run {plan.manifest_path}` renders them"
    )
    return EXIT_OK


def _export(args: argparse.Namespace, plan: Plan) -> int:
    result = session.export(plan, args.to, choose=args.choose or "approved")
    print(
        f"{len(result.files)} file(s) in {result.folder}: {result.linked} linked,"
        f" {result.copied} copied, {result.unchanged} already there"
    )
    if result.not_approved:
        print(f"{result.not_approved} finished output(s) not approved were left out (--all-done)")
    for path in (*result.lists, result.timeline):
        if path is not None:
            print(f"wrote {path}")
    return EXIT_OK


def _show_job(args: argparse.Namespace, plan: Plan) -> int:
    from .report import format_story

    story = session.show(plan, args.job)
    print(json.dumps(story, indent=2) if args.json else format_story(story))
    return EXIT_OK


#: command name → its handler, for ``cli._dispatch``.
JUDGING_COMMANDS: dict[str, Callable[[argparse.Namespace, Plan], int]] = {
    "review": _review,
    "reroll": _reroll,
    "export": _export,
    "show": _show_job,
}
