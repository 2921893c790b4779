"""The ``raybatch`` command: flags, exit codes and wiring; the logic lives elsewhere.

Exit codes: 0 every job done, 1 some jobs failed or were not started, 2 manifest or usage
error, 3 fatal (bad key, disk, state), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc

from . import __version__, report
from .errors import FatalError, ManifestError, RaybatchError
from .plan import Plan, cached_plan, check_default_output_dir, remember
from .report import write_results
from .state import DirectoryLock, StateStore, Transitions

if TYPE_CHECKING:
    from .fal import FalConfig
    from .pipeline import RunOptions, RunSummary, Scheduler

# Each command imports what it uses when it runs: ``status`` on a remembered plan needs
# neither pydantic, PyAV, httpx nor the emulator, and their imports cost most of a second.

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

#: Remote requests at once when neither the manifest nor --concurrency says: a small
#: account's limit. fal queues what is beyond the real limit, so this only sets the pace.
DEFAULT_CONCURRENCY = 8

#: Posters the review page refresh at the end of a run may extract (see review.py).
RUN_POSTERS = 200

#: The key ``--local`` uses when FAL_KEY is unset: the emulator accepts any key.
LOCAL_KEY = "local-emulator-key"


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors raise instead of printing a traceback-free exit itself."""

    def error(self, message: str) -> Any:
        raise ManifestError(f"usage: {message} (see raybatch {self.prog.split()[-1]} --help)")


def _selection(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="keep jobs whose clip id or prompt name matches (glob; repeatable)",
    )
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="drop jobs whose clip id or prompt name matches (glob; repeatable)",
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
    parser = _Parser(prog="raybatch", description=__doc__.splitlines()[0])
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
        "--concurrency",
        type=int,
        metavar="N",
        help="remote requests running at once (your fal account's limit)",
    )
    p.add_argument(
        "--max-cost",
        type=float,
        metavar="USD",
        help="refuse to start above this estimate; stop submitting when reached",
    )
    p.add_argument("--retry-failed", action="store_true", help="run failed jobs again")
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
        help="tries per step (upload, submit, status, result, download) before giving up",
    )
    p.add_argument(
        "--http-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long one request to fal may take before it counts as failed (default 30)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="one line per job transition")
    _prices_option(p)

    p = manifest_cmd("status", "show how far a run got (safe while it runs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    _prices_option(p)

    p = manifest_cmd("cancel", "cancel this manifest's requests in flight at fal")
    p.add_argument("--fal-url", metavar="URL", help="fal origin (an emulator)")

    manifest_cmd("report", "write <output_dir>/index.html to review results beside sources")

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
    try:
        args = build_parser().parse_args(argv)
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
    the_plan = cached_plan(
        args.manifest,
        output_dir=args.output_dir,
        only=args.only,
        exclude=args.exclude,
        probe_remote=getattr(args, "probe_remote", False),
        overrides=overrides,
    )
    command = {
        "plan": _plan,
        "run": _run,
        "status": _status,
        "cancel": _cancel,
        "report": _report,
    }[args.command]
    return command(args, the_plan)


# -- endpoints / plan / status / report -----------------------------------------------------


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


@contextmanager
def _existing_state(the_plan: Plan) -> Iterator[StateStore | None]:
    """The plan's state file opened for reading, or None when nothing has run yet."""
    store = report.open_state(the_plan)
    try:
        yield store
    finally:
        if store is not None:
            store.close()


def _show(args: argparse.Namespace, summary: dict[str, Any], text: Callable[..., str]) -> int:
    print(json.dumps(summary, indent=2) if args.json else text(summary))
    return EXIT_OK


def _plan(args: argparse.Namespace, the_plan: Plan) -> int:
    with _existing_state(the_plan) as store:
        summary = report.plan_summary(the_plan, store)
    return _show(args, summary, report.format_plan)


def _status(args: argparse.Namespace, the_plan: Plan) -> int:
    with _existing_state(the_plan) as store:
        summary = report.status_summary(
            the_plan, store, only=args.only, exclude=args.exclude, output_dir=args.output_dir
        )
    return _show(args, summary, report.format_status)


def _report(args: argparse.Namespace, the_plan: Plan) -> int:
    from .report import write_review_page

    page = write_review_page(the_plan)
    print(f"wrote {page}")
    return EXIT_OK


# -- run -----------------------------------------------------------------------------------


def _run(args: argparse.Namespace, the_plan: Plan) -> int:
    concurrency = args.concurrency or the_plan.facts.concurrency or DEFAULT_CONCURRENCY
    if concurrency < 1:
        raise ManifestError("usage: --concurrency must be at least 1")
    max_cost = args.max_cost if args.max_cost is not None else the_plan.facts.max_cost
    output_dir = the_plan.output_dir
    if args.output_dir is None and the_plan.facts.output_dir is None:
        check_default_output_dir(the_plan.manifest_path, output_dir)
    # Every refusal comes before anything is written.
    with _existing_state(the_plan) as existing:
        remaining = report.remaining_cost(the_plan, existing, retry_failed=args.retry_failed)
        unpriced = report.unpriced_remaining(the_plan, existing, retry_failed=args.retry_failed)
    if max_cost is not None and unpriced:
        from .endpoints import unpriced_refusal

        raise ManifestError(unpriced_refusal(unpriced))
    if max_cost is not None and remaining > max_cost + 1e-9:
        raise ManifestError(
            f"the remaining jobs are estimated at ${remaining:.2f}, above --max-cost"
            f" ${max_cost:.2f}; nothing was submitted (raise the cap or use --only)"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    with DirectoryLock(output_dir):
        store = StateStore.open(output_dir / "state.db")
        remember(the_plan.manifest_path, output_dir)
        try:
            store.add_plan(the_plan)
            if args.retry_failed:
                _reset_failed(store, the_plan)
            from .pipeline import RunOptions

            options = RunOptions(
                concurrency=concurrency,
                max_cost=max_cost,
                on_ambiguous=args.on_ambiguous,
                resubmit_expired=args.resubmit_expired,
                watch=args.watch,
                grace=args.grace,
                stage_attempts=max(1, args.retries),
            )
            with _fal_origin(args) as config:
                summary = _execute(
                    the_plan,
                    store,
                    config,
                    options,
                    verbose=args.verbose,
                    http_timeout=args.http_timeout,
                )
            try:
                write_results(store, output_dir / "results.jsonl", [s.key for s in the_plan.jobs])
            except FatalError as exc:
                if summary.fatal is None:
                    raise
                # The run already stopped on a fatal error (a full disk, most likely): that
                # one is the message and the exit code; this one is a consequence.
                print(f"raybatch: {exc}", file=sys.stderr)
        finally:
            store.close()
    from .report import write_review_page

    try:
        # Bounded: at the end of a 100k-job run, a poster per new video would take an hour
        # of decoding; `raybatch report` makes the rest.
        write_review_page(the_plan, posters=RUN_POSTERS)
    except Exception as exc:
        print(f"raybatch: could not refresh the review page: {exc}", file=sys.stderr)
    return _exit_code(summary)


def _reset_failed(store: StateStore, the_plan: Plan) -> None:
    states = store.states()
    again = [s.key for s in the_plan.jobs if states.get(s.key) in ("failed", "cancelled")]
    if again:
        store.execute_batch([Transitions.reset(key) for key in again])


@contextmanager
def _fal_origin(args: argparse.Namespace) -> Iterator[FalConfig]:
    """The fal configuration for this run, starting the emulator for ``--local``."""
    from .fal import FalConfig

    if not args.local:
        yield FalConfig.from_env(args.fal_url)
        return
    from .emulator import launch

    with launch.local_emulator() as url:
        key = os.environ.get("FAL_KEY") or LOCAL_KEY
        yield FalConfig.single_origin(url, key)


def _execute(
    the_plan: Plan,
    store: StateStore,
    config: FalConfig,
    options: RunOptions,
    *,
    verbose: bool,
    http_timeout: float,
) -> RunSummary:
    from .fal import FalClient
    from .pipeline import Scheduler
    from .report import Progress

    progress = Progress(the_plan, store, verbose=verbose)

    async def main() -> RunSummary:
        async with FalClient(config, timeout=http_timeout) as client:
            scheduler = Scheduler(
                the_plan.jobs, store, client, the_plan.output_dir, options, progress
            )
            async with anyio.create_task_group() as tg:
                # start(), not start_soon(): the handlers are in place before the first submit.
                await tg.start(_signals, scheduler)
                summary = await scheduler.run()
                tg.cancel_scope.cancel()
            return summary

    with progress:
        summary = anyio.run(main)
        progress.finish(summary)
    return summary


async def _signals(
    scheduler: Scheduler, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    """First SIGINT/SIGTERM drains; the second leaves in-flight requests to a later run."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        task_status.started()
        count = 0
        async for _ in received:
            count += 1
            if count == 1:
                scheduler.drain()
            else:
                scheduler.abort()


def _exit_code(summary: RunSummary) -> int:
    if summary.fatal is not None:
        print(f"raybatch: {summary.fatal}", file=sys.stderr)
        return summary.fatal.exit_code
    if summary.interrupted:
        return EXIT_INTERRUPTED
    if summary.failed or summary.not_started or summary.cancelled:
        return EXIT_FAILED
    return EXIT_OK


# -- cancel --------------------------------------------------------------------------------


def _cancel(args: argparse.Namespace, the_plan: Plan) -> int:
    path = the_plan.output_dir / "state.db"
    if not path.exists():
        print("nothing to cancel: no state file yet")
        return EXIT_OK
    from .fal import FalConfig

    store = StateStore.open(path, create=False)
    try:
        with DirectoryLock(the_plan.output_dir):
            outcome = anyio.run(_cancel_all, store, the_plan, FalConfig.from_env(args.fal_url))
    finally:
        store.close()
    for line in outcome:
        print(line)
    return EXIT_OK


async def _cancel_all(store: StateStore, the_plan: Plan, config: FalConfig) -> list[str]:
    from .fal import FalClient
    from .pipeline import cancel_requests

    async with FalClient(config) as client:
        outcomes = await cancel_requests(store, [s.key for s in the_plan.jobs], client)
    lines = [f"{o.key[:12]} {o.label}: {o.note}" for o in outcomes]
    cancelled = sum(o.cancelled for o in outcomes)
    lines.append(
        f"{cancelled} job(s) marked cancelled; `raybatch run --retry-failed` runs them again"
    )
    return lines


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
