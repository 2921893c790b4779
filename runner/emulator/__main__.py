"""``python -m runner.emulator [options]``: serve the emulator in the foreground."""

import argparse
import sys

from .server import add_arguments, run

parser = argparse.ArgumentParser(
    prog="python -m runner.emulator", description="Serve the fal emulator."
)
add_arguments(parser)
sys.exit(run(parser.parse_args()))
