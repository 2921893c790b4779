"""What the command line says about itself: the top-level help, option defaults, and
usage errors in a command's own words with a "did you mean" for a mistyped option."""

from __future__ import annotations

import argparse
import difflib

from .errors import ManifestError

#: What ``raybatch --help`` says above the commands.
DESCRIPTION = (
    "Run large batches of fal.ai generative-video jobs (Luma Ray 3.2) from one YAML manifest."
    " Every clip x prompt x setting is a job; run the same command again after any"
    " interruption and it goes on where it stopped, paying for nothing twice."
)
#: ... and below them.
EPILOG = """start here:
  raybatch plan MANIFEST           check the manifest, see the jobs and their cost
  raybatch run MANIFEST --local    render offline with the built-in fal emulator
  raybatch run MANIFEST            render on fal (FAL_KEY from the environment)
  raybatch COMMAND --help          a command's options

exit codes: 0 every job done; 1 some jobs failed or were not started, or sources were
left out; 2 manifest or usage error (nothing submitted); 3 fatal (bad key, disk full,
unusable state, fal unreachable too long); 130 interrupted."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with each option's default, where it has one and its text does not say it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The arguments; one not understood is refused in the command's own words."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = getattr(args, "command", None)
        where = f"raybatch {command}" if command else "raybatch"
        hint = _option_hint(parser, command, extra)
        raise ManifestError(
            f"usage: unrecognized arguments: {' '.join(extra)}{hint} (see {where} --help)"
        )
    return args


def _option_hint(parser: argparse.ArgumentParser, command: str | None, extra: list[str]) -> str:
    """A "did you mean" for a mistyped option of ``command``."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    chosen = subparsers[0].choices.get(command) if subparsers and command else parser
    options = [o for a in (chosen or parser)._actions for o in a.option_strings]
    typed = next((word.split("=")[0] for word in extra if word.startswith("--")), None)
    close = difflib.get_close_matches(typed, options, n=1) if typed else []
    return f"; did you mean {close[0]}?" if close else ""
