"""The emulator's settings: one frozen dataclass shared by the app, the server and the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Literal

from .faults import parse_spec
from .protocol import app_prefix

#: S3's (and R2's) smallest part but the last of a multipart upload: EntityTooSmall below.
MIN_PART_SIZE = 5 * 1024 * 1024
#: S3's largest part number.
MAX_PARTS = 10_000

CancelRunning = Literal["finish", "abort"]
UnknownApp = Literal["404", "accept"]
V2vLong = Literal["first", "reject"]
V2vShort = Literal["pad", "loop", "source", "reject"]


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated fal account behaves.

    Every emulated duration (``job_seconds``, ``result_ttl`` and a client's
    ``X-Fal-Request-Timeout``) is multiplied by ``time_scale`` to get wall seconds, so a
    bench can replay an hour of fal time in a minute with the same numbers.

    Origins: the queue (and fal's REST API) on ``host:port``; storage and the CDN on
    ``storage_host:storage_port`` (a second socket: ``storage_host`` defaults to ``host``,
    port 0 picks a free one), as fal serves them from other hosts than the queue; with
    ``backup_host`` set, a second queue origin at ``backup_host:port`` sharing the account
    (fal's backup host, queue.falrun.com, which fal-client 1.0.3 tries once after a
    connect error or connect timeout, on the same scheme, port and path:
    ``fal_client/client.py`` l.88-95 and l.1000-1091, read 2026-12-05).
    """

    host: str = "127.0.0.1"
    port: int = 0
    storage_host: str | None = None
    storage_port: int = 0
    backup_host: str | None = None
    time_scale: float = 1.0
    #: The account's concurrency limit: requests beyond it wait IN_QUEUE.
    max_running: int = 40
    seed: int = 0
    #: Range (emulated seconds) job durations are drawn from, uniformly and seeded.
    job_seconds: tuple[float, float] = (20.0, 60.0)
    #: Ask the renderer for cheap deterministic bytes instead of real media.
    synthetic: bool = False
    #: A fault spec, see :mod:`runner.emulator.faults`.
    faults: str = ""
    #: Emulated seconds a result stays fetchable after completion; None keeps it forever.
    result_ttl: float | None = None
    #: Keys answered with 401, as if revoked.
    bad_keys: frozenset[str] = field(default_factory=frozenset)
    #: How many renders may run at once (they are CPU-bound threads).
    render_limit: int = 2
    #: Status streams one key may hold open at once; the next gets 429. 0: no cap.
    max_streams: int = 0
    #: What cancelling a running request does: it finishes, bills and returns its result
    #: (fal's documented best effort), or it ends at once ``client_cancelled``.
    cancel_running: CancelRunning = "finish"
    #: A submit to an app the emulator does not serve: 404 (the default, see protocol.py)
    #: or accepted and echoed (the emulator's old behaviour).
    unknown_app: UnknownApp = "404"
    #: ``owner/app`` globs the emulator serves besides Luma's, with its echo renderer.
    apps: tuple[str, ...] = ("test/*", "bench/*")
    #: video-to-video given a source longer than ``duration``: render its first
    #: ``duration`` seconds, or refuse it (422).
    v2v_long: V2vLong = "first"
    #: ...given a source shorter than ``duration``: hold its last frame, loop it, keep the
    #: source's length, or refuse (see render.py).
    v2v_short: V2vShort = "pad"
    #: Pad rendered videos to about the size Ray 3.2 outputs have, for transfer tests.
    realistic_sizes: bool = False
    #: A directory where requests, results and files survive a restart; None: memory only.
    state_dir: str | None = None
    #: The smallest part but the last a multipart upload may have: S3's 5 MiB. Lower it
    #: only in tests whose point is many parts from a few KiB, never to pass real clients.
    min_part_size: int = MIN_PART_SIZE

    def __post_init__(self) -> None:
        low, high = self.job_seconds
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if self.max_running < 1 or self.render_limit < 1:
            raise ValueError("max_running and render_limit must be >= 1")
        if self.max_streams < 0:
            raise ValueError("max_streams must be >= 0")
        if not 0 <= low <= high:
            raise ValueError("job_seconds must be 0 <= MIN <= MAX")
        if self.result_ttl is not None and self.result_ttl < 0:
            raise ValueError("result_ttl must be >= 0")
        for name, allowed in (
            ("cancel_running", ("finish", "abort")),
            ("unknown_app", ("404", "accept")),
            ("v2v_long", ("first", "reject")),
            ("v2v_short", ("pad", "loop", "source", "reject")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        # A frozen dataclass still has to accept lists or sets from callers.
        keys: Iterable[str] = self.bad_keys
        object.__setattr__(self, "bad_keys", frozenset(keys))
        object.__setattr__(self, "apps", tuple(self.apps))
        object.__setattr__(self, "job_seconds", (float(low), float(high)))
        parse_spec(self.faults)  # fail at construction, not at the first request

    def wall(self, seconds: float) -> float:
        """Wall-clock seconds for ``seconds`` of emulated time."""
        return seconds * self.time_scale

    def serves(self, endpoint: str, luma_apps: Iterable[str]) -> bool:
        """Whether ``endpoint``'s app is one the emulator knows (Luma's, or in ``apps``)."""
        try:
            app = app_prefix(endpoint)
        except ValueError:
            return False
        return app in set(luma_apps) or any(fnmatchcase(app, glob) for glob in self.apps)

    def render_options(self) -> dict[str, Any]:
        """The renderer's keyword options that come from this configuration."""
        return {
            "v2v_long": self.v2v_long,
            "v2v_short": self.v2v_short,
            "realistic_sizes": self.realistic_sizes,
        }
