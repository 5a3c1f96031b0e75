"""Unix times for people, monotonic times for the mechanism.

The process table, the gate and the policies reason on ``time.monotonic()`` (it never jumps).
Wherever a user reads a time (the programs API, the trace file, ``/v1/models``), it is shown
as unix seconds: the monotonic time plus one offset taken when the app was built, so the
conversion costs an addition and every displayed time is on the same footing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiohttp import web


@dataclass(frozen=True, slots=True)
class WallClock:
    offset: float  # unix time minus monotonic time, at start-up
    started: float  # unix time at start-up

    @classmethod
    def capture(cls) -> WallClock:
        wall, mono = time.time(), time.monotonic()
        return cls(offset=wall - mono, started=wall)

    def unix(self, monotonic: float) -> float:
        return monotonic + self.offset

    def unix_or_none(self, monotonic: float | None) -> float | None:
        return None if monotonic is None else monotonic + self.offset


WALL_CLOCK = web.AppKey("autellix_wall_clock", WallClock)
