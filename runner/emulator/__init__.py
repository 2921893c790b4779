"""A fal emulator: fal's queue, storage and CDN protocol on one loopback origin.

An independent witness for tests, benchmarks and the offline demo: it imports nothing
from the rest of ``runner``, keeps its own table of fal's input rules, simulates an
account's concurrency limit, queue positions, logs, result retention, time scaling and
scripted or random faults, and counts everything at ``GET /_emulator/stats``.

    with EmulatorServer(EmulatorConfig(job_seconds=(0.2, 0.5))) as emulator:
        ...  # point a client at emulator.url
"""

from .app import create_app
from .config import EmulatorConfig
from .server import EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorServer", "create_app"]
