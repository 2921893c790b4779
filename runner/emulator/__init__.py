"""A fal emulator: fal's queue, REST, storage and CDN protocol on loopback origins.

An independent witness for tests, benchmarks and the offline demo: it imports nothing
from the rest of ``runner``, keeps its own table of fal's input rules and prices,
simulates an account's concurrency limit, queue positions, logs, result retention, time
scaling and scripted, random or timed faults, and counts everything (what each request
billed included) at ``GET /_emulator/stats``.

Origins (see ``server.py``): the queue and REST API on one, storage and the CDN on
another (the CDN token's ``base_url``), and optionally fal's backup queue host on a third.
Switches (``config.py``, and ``--help`` of ``python -m runner.emulator``):
``--max-streams``, ``--cancel-running finish|abort``, ``--unknown-app 404|accept``,
``--apps``, ``--v2v-long first|reject``, ``--v2v-short pad|loop|source|reject``,
``--realistic-sizes``, ``--state-dir``, ``--backup-host``, ``--exit-with-stdin``.
Faults: ``faults.py``'s grammar table.

    with EmulatorServer(EmulatorConfig(job_seconds=(0.2, 0.5))) as emulator:
        ...  # point a client at emulator.url (queue) and emulator.storage_url (CDN)
"""

from .app import create_app
from .config import EmulatorConfig
from .server import EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorServer", "create_app"]
