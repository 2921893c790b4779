"""The ``raybatch`` command: parses arguments, calls ``runner.session``, prints, and
turns the outcome into an exit code.

Exit codes: 0 every job done, 1 some jobs failed or were not started, 2 manifest or usage
error, 3 fatal (bad key, disk, state, fal unreachable too long), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, session
from ._cli_judging import JUDGING_COMMANDS, add_judging_commands
from ._cli_keepers import KEEPERS, show
from ._help import (
    DESCRIPTION,
    EPILOG,
    EXIT_FAILED,
    EXIT_FATAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    HelpFormatter,
    parse,
)
from .errors import ManifestError, RaybatchError

if TYPE_CHECKING:
    from .plan import Plan
    from .report import Progress
    from .state import StateStore


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors raise instead of printing a traceback-free exit itself."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> Any:
        raise ManifestError(f"usage: {message} (see {self.prog} --help)")


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="[FIELD=]GLOB",
        help="keep these jobs; FIELD is clip, prompt, take or a matrix field, a bare GLOB"
        " matches clip ids and prompt names; repeatable: OR within a field, AND across fields",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="[FIELD=]GLOB",
        help="then drop the jobs these terms describe (read like --only)",
    )


def _skip_bad_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out clips and images that cannot be used (listing each with its reason)"
        " and go on with the rest, exiting 1; the manifest's on_bad_source: skip says the same",
    )


def _prices_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--prices",
        type=Path,
        metavar="FILE",
        help="YAML/JSON price (and limits:) rows; they win over the manifest's prices:",
    )


def build_parser() -> argparse.ArgumentParser:
    """The whole command line."""
    parser = _Parser(prog="raybatch", description=textwrap.fill(DESCRIPTION, 88), epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"raybatch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def manifest_cmd(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("manifest", type=Path, help="the YAML manifest")
        p.add_argument(
            "--output-dir",
            type=Path,
            help="default: the manifest's output_dir, else outputs/<name>/",
        )
        _selection(p)
        return p

    p = manifest_cmd("plan", "validate a manifest and show what would run and what it costs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--probe-remote", action="store_true", help="also check remote media URLs")
    p.add_argument(
        "--clips",
        action="store_true",
        help="per source: duration, size, rate, rotation, audio, what is rendered and billed,"
        " and every warning (decodes the end of each clip to find truncated files)",
    )
    _skip_bad_option(p)
    _prices_option(p)

    p = manifest_cmd("run", "run every job not yet done (resumes where a previous run stopped)")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--local",
        action="store_true",
        help="start the built-in fal emulator for this run (fully offline)",
    )
    where.add_argument(
        "--fal-url",
        metavar="URL",
        help="send queue, storage and file traffic to this origin (an emulator)",
    )
    p.add_argument(
        "--fal-backup-url",
        metavar="URL",
        help="with --fal-url: the backup host a queue call that cannot connect goes to once",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="remote requests running at once, your fal account's limit (default: the"
        f" manifest's concurrency:, else {session.DEFAULT_CONCURRENCY})",
    )
    p.add_argument(
        "--max-cost",
        type=float,
        metavar="USD",
        help="refuse to start above this estimate; stop submitting when reached",
    )
    p.add_argument(
        "--confirm-above",
        type=float,
        metavar="USD",
        help="on a terminal, ask before starting jobs estimated above this (default: the"
        f" manifest's confirm_above:, else {session.CONFIRM_ABOVE:g}); without a max_cost it"
        " always asks",
    )
    p.add_argument(
        "-y", "--yes", action="store_true", help="start without asking (see --confirm-above)"
    )
    p.add_argument("--retry-failed", action="store_true", help="run failed jobs again")
    p.add_argument(
        "--rerender",
        action="store_true",
        help="render again (billed again, priced first) jobs whose output is missing or"
        " altered, instead of downloading it again",
    )
    p.add_argument(
        "--on-ambiguous",
        choices=("resubmit", "fail"),
        default="resubmit",
        help="a submit whose answer was lost: submit again (default) or fail it",
    )
    p.add_argument(
        "--resubmit-expired",
        action="store_true",
        help="render again (and pay again) a job whose result expired before fetch",
    )
    p.add_argument(
        "--watch",
        choices=("stream", "poll"),
        default="stream",
        help="how to follow jobs at fal (default: the SSE status stream)",
    )
    p.add_argument(
        "--grace",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="after Ctrl-C, how long in-flight jobs may still finish",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=8,
        metavar="N",
        help="tries per call (upload, submit, status, result, download) before giving up",
    )
    p.add_argument(
        "--max-outage",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="how long fal may stay unreachable before the run stops (default 1800)",
    )
    p.add_argument(
        "--stream-idle",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a status stream silent this long (no event, no ping) is given up for polling",
    )
    p.add_argument(
        "--http-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long one request to fal may take before it counts as failed (default 30)",
    )
    p.add_argument(
        "--wait-for-verdicts",
        action="store_true",
        help="with gate: looks, stay until every look is judged (approved renders run at"
        " once) instead of ending when only jobs waiting for a verdict are left",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="one line per job transition")
    _skip_bad_option(p)
    _prices_option(p)

    p = manifest_cmd("status", "show how far a run got (safe while it runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _prices_option(p)

    p = manifest_cmd(
        "cancel",
        "cancel this manifest's unfinished jobs, at fal too (asks the run, if one is going)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument("--fal-url", metavar="URL", help="fal origin (an emulator)")
    where.add_argument(
        "--local", action="store_true", help="the jobs ran on the built-in emulator (run --local)"
    )

    manifest_cmd("report", "write <output_dir>/index.html to review results beside sources")

    p = manifest_cmd(
        "verify", "check every done output against the state; mark missing or altered ones"
    )
    p.add_argument("--full", action="store_true", help="compare every file's sha256")

    add_judging_commands(manifest_cmd, _prices_option)

    p = sub.add_parser(
        "endpoints",
        help="list the known endpoints' fields, rules, limits and prices, with sources",
        description="list the known endpoints' fields, rules, limits and prices, each with"
        " its source and date; rows from --prices or --manifest are marked as yours",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _prices_option(p)
    p.add_argument("--manifest", type=Path, help="also apply this manifest's prices:/limits:")

    sub.add_parser("schema", help="print the manifest's JSON Schema")
    # Its options belong to the emulator (see main): listed here for --help only.
    sub.add_parser("emulator", help="serve the built-in fal emulator on loopback (--help: options)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["emulator"]:
        from .emulator import server as emulator_server

        return emulator_server.main(argv[1:], prog="raybatch emulator")
    # The retry library logs each retry; the engine reports what matters itself.
    logging.getLogger("stamina").addHandler(logging.NullHandler())
    try:
        args = parse(build_parser(), argv)
        return _dispatch(args)
    except RaybatchError as exc:
        print(f"raybatch: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        # An OS error nothing below classified (say, a full disk while making the output
        # directory): reported like a DiskError, never as a traceback.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"raybatch: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print("raybatch: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "schema":
        from .manifest import manifest_schema

        print(json.dumps(manifest_schema(), indent=2))
        return EXIT_OK
    if args.command == "endpoints":
        return _endpoints(args)
    overrides = None
    if getattr(args, "prices", None) is not None:
        from .manifest import load_overrides

        overrides = load_overrides(args.prices)
    if args.command in KEEPERS:
        located = session.locate(
            args.manifest,
            output_dir=args.output_dir,
            only=args.only,
            exclude=args.exclude,
            overrides=overrides,
        )
        for warning in located.warnings:
            print(f"raybatch: {warning}", file=sys.stderr)
        return KEEPERS[args.command](args, located)
    plan = session.load(
        args.manifest,
        output_dir=args.output_dir,
        only=args.only,
        exclude=args.exclude,
        probe_remote=getattr(args, "probe_remote", False),
        overrides=overrides,
        skip_bad=getattr(args, "skip_bad", False),
    )
    command: Callable[[argparse.Namespace, Plan], int] = {
        "plan": _plan,
        "run": _run,
        **JUDGING_COMMANDS,
    }[args.command]
    return command(args, plan)


def _endpoints(args: argparse.Namespace) -> int:
    from .endpoints import (
        EndpointTables,
        Overrides,
        endpoint_rows,
        format_endpoints,
        rows_as_json,
        user_cite,
    )
    from .manifest import load, load_overrides

    layers = []
    if args.manifest is not None:
        manifest, _lines = load(args.manifest)
        layers.append(
            Overrides(manifest.prices, manifest.limits, user_cite("manifest", args.manifest))
        )
    if args.prices is not None:
        layers.append(load_overrides(args.prices))
    rows = endpoint_rows(EndpointTables(layers))
    print(rows_as_json(rows) if args.json else format_endpoints(rows))
    return EXIT_OK


def _plan(args: argparse.Namespace, plan: Plan) -> int:
    from .report import format_plan

    clips = session.clip_facts(plan) if args.clips else None
    summary = session.plan_summary(plan, skip_bad=args.skip_bad, clips=clips, jobs=args.json)
    show(args, summary, format_plan)
    # Something in the manifest will not be rendered: scripts must see it.
    return EXIT_FAILED if plan.skipped else EXIT_OK


def _run(args: argparse.Namespace, plan: Plan) -> int:
    from .pipeline import RunOptions

    # 0 is a value (refused by session.run), not a missing one.
    concurrency = args.concurrency if args.concurrency is not None else plan.facts.concurrency
    options = RunOptions(
        concurrency=concurrency if concurrency is not None else session.DEFAULT_CONCURRENCY,
        max_cost=args.max_cost if args.max_cost is not None else plan.facts.max_cost,
        on_ambiguous=args.on_ambiguous,
        resubmit_expired=args.resubmit_expired,
        watch=args.watch,
        grace=args.grace,
        retries=max(1, args.retries),
        max_outage=args.max_outage,
        stream_idle=args.stream_idle,
        wait_for_verdicts=args.wait_for_verdicts,
    )

    @contextmanager
    def observe(the_plan: Plan, store: StateStore) -> Iterator[Progress]:
        from .report import Progress

        with Progress(the_plan, store, verbose=args.verbose) as shown:
            yield shown

    try:
        result = session.run(
            plan,
            options,
            skip_bad=args.skip_bad,
            confirm=lambda estimate: _before_start(args, plan, options.max_cost, estimate),
            fal=session.fal_origin(
                local=args.local,
                fal_url=args.fal_url,
                backup_url=args.fal_backup_url,
                state_dir=plan.output_dir / ".emulator",
            ),
            retry_failed=args.retry_failed,
            rerender=args.rerender,
            observe=observe,
            handle_signals=True,
            http_timeout=args.http_timeout,
        )
    except session.Declined:
        print(
            "raybatch: not started; nothing was submitted (--yes starts without asking,"
            " --max-cost caps the spend)",
            file=sys.stderr,
        )
        return EXIT_FAILED
    for warning in result.warnings:
        print(f"raybatch: {warning}", file=sys.stderr)
    if plan.skipped:
        print(
            f"raybatch: {len(plan.skipped)} source(s) were left out (listed above)", file=sys.stderr
        )
    return _exit_code(result)


def _before_start(
    args: argparse.Namespace, plan: Plan, max_cost: float | None, estimate: session.Estimate
) -> bool:
    """Once nothing refuses the run: the sources left out and the clips' warnings, then
    whether it may start: on a terminal, the estimate is shown and the user asked when it
    is above the threshold or no max_cost caps it. Off a terminal it never waits."""
    for line in _left_out(plan):
        print(f"raybatch: {line}", file=sys.stderr)
    for line in _clip_warnings(plan):
        print(f"raybatch: warning: {line}", file=sys.stderr)
    if args.yes or args.local:  # the built-in emulator bills nothing
        return True
    threshold = args.confirm_above
    if threshold is None:
        threshold = plan.facts.confirm_above
    question = estimate.question(
        session.CONFIRM_ABOVE if threshold is None else threshold, max_cost
    )
    if question is None:
        return True
    if not _interactive():
        print(f"raybatch: {question} (not a terminal: starting without asking)", file=sys.stderr)
        return True
    print(f"raybatch: {question}. Start? [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()  # "" at end of input: no
    return answer.strip().lower() in ("y", "yes")


def _interactive() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def _clip_warnings(plan: Plan) -> list[str]:
    from .report import clip_warnings

    return clip_warnings(plan)


def _left_out(plan: Plan) -> list[str]:
    from .report import source_notes

    return source_notes(plan)


def _exit_code(result: session.RunResult) -> int:
    if result.summary.fatal is not None:
        print(f"raybatch: {result.summary.fatal}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
