"""Shared gates every call of a stage passes: the submit pause a 429's Retry-After asks
for, the outage gates (fal's API, fal's CDN), and the pace of status polls.

An outage gate is a circuit breaker. A few failures in a row that say the service may be
down (no answer, or a 5xx: ``RaybatchError.outage``) close it; from then on calls wait at
the gate instead of spending their attempts, and one probe at a time goes through, with a
growing pause, until one succeeds and the gate opens for everybody. If the outage lasts
longer than the limit, the next call raises :class:`~runner.errors.OutageTooLong` and
the run stops (exit 3); the next run resumes where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio

from ..errors import OutageTooLong, RaybatchError

#: Consecutive outage failures (across all calls of a service) that close its gate.
TRIP_AFTER = 5
#: The first pause before a probe while a gate is closed, doubling up to PROBE_GROWTH
#: times that (1 s to 30 s by default).
PROBE_INITIAL = 1.0
PROBE_GROWTH = 30.0


class OutageGate:
    """The circuit breaker of one service; see the module docstring."""

    def __init__(
        self,
        service: str,
        *,
        limit: float,
        on_note: Callable[[str], None],
        trip_after: int = TRIP_AFTER,
        probe_initial: float = PROBE_INITIAL,
    ) -> None:
        self.service = service
        self._limit = limit
        self._note = on_note
        self._trip_after = trip_after
        self._probe_initial = probe_initial
        self._probe_max = probe_initial * PROBE_GROWTH
        self._streak = 0
        self._streak_started: float | None = None  # wall clock, for the message
        self._closed_at: float | None = None  # monotonic, for the limit
        self._down_since: float | None = None  # wall clock
        self._probing = False
        self._probe_delay = probe_initial
        self._opened = anyio.Event()
        self.outages = 0

    @property
    def closed(self) -> bool:
        """Whether calls are held (the service looks down)."""
        return self._closed_at is not None

    async def wait(self) -> bool:
        """Return when a call may go: at once while the gate is open; while it is closed,
        when this caller is the next probe (returns True) or the gate opens."""
        while self._closed_at is not None:
            if time.monotonic() - self._closed_at > self._limit:
                raise OutageTooLong(
                    f"{self.service} has been unreachable since {_clock(self._down_since)}"
                    f" (over the outage limit of {self._limit:g}s); run the same command"
                    " again to resume"
                )
            if not self._probing:
                self._probing = True
                delay, self._probe_delay = (
                    self._probe_delay,
                    min(self._probe_max, self._probe_delay * 2),
                )
                with anyio.move_on_after(delay):
                    await self._opened.wait()
                if self._closed_at is None:
                    self._probing = False
                    return False
                return True  # go as the probe (``succeeded`` or ``absorbs`` ends the probe)
            await self._opened.wait()
        return False

    def abandon_probe(self) -> None:
        """The probe ended without an answer either way (cancelled): let another probe."""
        self._probing = False

    def absorbs(self, error: RaybatchError) -> bool:
        """Count a failure; True when the gate holds the call (it is closed, or closes
        now), so the call uses no attempt and waits at the gate."""
        if not error.outage:
            self.succeeded()  # the service answered: it is up, whatever it said
            return False
        if self._closed_at is not None:
            self._probing = False  # the probe failed: the next waits a little longer
            return True
        if self._streak == 0:
            self._streak_started = time.time()
        self._streak += 1
        if self._streak < self._trip_after:
            return False
        self._closed_at = time.monotonic()
        self._down_since = self._streak_started
        self._probe_delay = self._probe_initial
        self._opened = anyio.Event()
        self.outages += 1
        self._note(
            f"{self.service} looks unreachable since {_clock(self._down_since)} ({error});"
            f" pausing every call until it answers (at most {self._limit:g}s)"
        )
        return True

    def succeeded(self) -> None:
        """A call got through: the streak ends, and a closed gate opens."""
        self._streak = 0
        if self._closed_at is None:
            return
        lasted = time.time() - (self._down_since or time.time())
        self._closed_at = None
        self._probing = False
        self._opened.set()
        self._note(f"{self.service} answers again after {lasted:.0f}s; resuming")


class RateGate:
    """A minimal GCRA pacer: at most ``rate`` passes per second, no bursts."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0

    async def wait(self) -> None:
        """Return when the next pass is due."""
        now = time.monotonic()
        at = max(now, self._next)
        self._next = at + self._interval
        if at > now:
            await anyio.sleep(at - now)


class Gates:
    """Every gate of a run: the submit pause, one outage gate per service, the poll pace."""

    def __init__(
        self,
        *,
        outage_limit: float,
        status_per_second: float,
        on_note: Callable[[str], None],
        trip_after: int = TRIP_AFTER,
        probe_initial: float = PROBE_INITIAL,
    ) -> None:
        def gate(service: str) -> OutageGate:
            return OutageGate(
                service,
                limit=outage_limit,
                on_note=on_note,
                trip_after=trip_after,
                probe_initial=probe_initial,
            )

        self.fal = gate("fal")
        self.cdn = gate("fal's CDN")
        self.polls = RateGate(status_per_second)
        self._note = on_note
        self._submits_paused_until = 0.0

    def for_stage(self, stage: str) -> OutageGate:
        """The outage gate that stage's calls pass (downloads come from the CDN)."""
        return self.cdn if stage == "download" else self.fal

    async def before(self, stage: str) -> bool:
        """Wait at every gate of ``stage``; True when the call goes as an outage probe."""
        if stage == "submit":
            pause = self._submits_paused_until - time.monotonic()
            if pause > 0:
                await anyio.sleep(pause)
        return await self.for_stage(stage).wait()

    def pause_submits(self, seconds: float) -> None:
        """A 429 asked for ``seconds`` of quiet: every submit waits that long."""
        until = time.monotonic() + seconds
        if until > self._submits_paused_until:
            self._submits_paused_until = until
            self._note(f"fal is rate limiting submits (HTTP 429); pausing them {seconds:.1f}s")


def _clock(when: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when)) if when else "?"
