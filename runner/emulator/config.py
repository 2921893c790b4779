"""The emulator's settings: one frozen dataclass shared by the app, the server and the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .faults import parse_spec


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulated fal account behaves.

    Every emulated duration (``job_seconds``, ``result_ttl`` and a client's
    ``X-Fal-Request-Timeout``) is multiplied by ``time_scale`` to get wall seconds, so a
    bench can replay an hour of fal time in a minute with the same numbers.
    """

    host: str = "127.0.0.1"
    port: int = 0
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

    def __post_init__(self) -> None:
        low, high = self.job_seconds
        if self.time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        if self.max_running < 1 or self.render_limit < 1:
            raise ValueError("max_running and render_limit must be >= 1")
        if not 0 <= low <= high:
            raise ValueError("job_seconds must be 0 <= MIN <= MAX")
        if self.result_ttl is not None and self.result_ttl < 0:
            raise ValueError("result_ttl must be >= 0")
        # A frozen dataclass still has to accept lists or sets from callers.
        keys: Iterable[str] = self.bad_keys
        object.__setattr__(self, "bad_keys", frozenset(keys))
        object.__setattr__(self, "job_seconds", (float(low), float(high)))
        parse_spec(self.faults)  # fail at construction, not at the first request

    def wall(self, seconds: float) -> float:
        """Wall-clock seconds for ``seconds`` of emulated time."""
        return seconds * self.time_scale
