"""The circuit breaker over an engine's passive health.

Closed: calls flow; ``eject_after`` failures in a row trip it. Open: the engine gets no calls,
and a passing health check does not re-admit it before ``retry_at``: an engine can answer
/health while it fails calls, and re-admitting it at once would fail calls in a loop.
Half-open: re-admitted on trial; its first failed call trips the breaker again (with double
the wait), its first good call closes it. Time comes from the caller.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Breaker:
    backoff_s: float = 5.0
    max_backoff_s: float = 120.0
    trips: int = 0  # trips in a row, since the last call that went well
    retry_at: float = 0.0
    half_open: bool = False

    def trip(self, now: float) -> float:
        """Open the breaker; returns how long until the engine may be tried again."""
        self.trips += 1
        self.half_open = False
        wait = min(self.max_backoff_s, self.backoff_s * 2.0 ** (self.trips - 1))
        self.retry_at = now + wait
        return wait

    def may_retry(self, now: float) -> bool:
        return now >= self.retry_at

    def readmit(self) -> None:
        """A health check passed after the wait: calls may try the engine again."""
        self.half_open = self.trips > 0

    def close(self) -> bool:
        """A call went well; True if that closed a half-open breaker."""
        was = self.half_open
        self.trips = 0
        self.half_open = False
        return was
