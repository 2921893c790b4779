"""``python -m runner.emulator [options]``: serve the emulator in the foreground."""

import sys

from .server import main

sys.exit(main(sys.argv[1:]))
