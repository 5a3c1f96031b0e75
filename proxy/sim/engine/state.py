"""A simulated engine's runtime state: its model, clock, open streams and counters.

The server's engine loop and handlers change it; the metrics collector reads it at scrape time.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.engine import EngineModel, EngineRequest

Event = tuple[int, int, str | None]
"""What a handler receives per step: (choice index, new tokens, finish reason or None)."""


class SimClock:
    """Simulated seconds since the engine started: real elapsed time / ``time_scale``."""

    def __init__(self, time_scale: float, real: Callable[[], float] = time.perf_counter) -> None:
        self.time_scale = time_scale
        self._real = real
        self._origin = real()

    def start(self) -> None:
        self._origin = self._real()

    def now(self) -> float:
        return (self._real() - self._origin) / self.time_scale

    def real_delay(self, sim_time: float) -> float:
        """Real seconds from now until the clock reads ``sim_time`` (0 if already past)."""
        return max(0.0, self._origin + sim_time * self.time_scale - self._real())


@dataclass(slots=True, eq=False)
class Stream:
    request: EngineRequest
    # The choices of one HTTP request share their handler's queue.
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    ended: bool = False  # the final event was queued; the model no longer holds the request
    index: int = 0  # the choice it generates
    group: str = ""  # the id of the HTTP request it belongs to


@dataclass(slots=True)
class SimState:
    """One simulated engine: its model, clock, open streams and counters."""

    config: SimEngineConfig
    model: EngineModel
    clock: SimClock
    streams: dict[str, Stream] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    id_prefix: str = field(default_factory=lambda: secrets.token_hex(3))
    busy_until: float = 0.0
    failed: BaseException | None = None
    finished: Counter[str] = field(default_factory=Counter)
    aborted: Counter[str] = field(default_factory=Counter)  # by cause
    prompt_tokens: int = 0
    generation_tokens: int = 0

    @property
    def label(self) -> str:
        return self.config.served_names()[0]

    def next_id(self) -> str:
        return f"{self.id_prefix}{next(self.ids):x}"


SIM = web.AppKey("sim_state", SimState)
