"""The load-only balancers: engines in turn, or the least loaded."""

from __future__ import annotations

from collections.abc import Sequence

from proxy.kvhints.balancers.base import Decision, Route, Tuning, least_loaded
from proxy.kvhints.load import EngineLoad


class RoundRobin:
    """Engines in turn, blind to load and to programs (a baseline)."""

    name = "round-robin"

    def __init__(self, tuning: Tuning | None = None) -> None:
        self._next = 0

    def choose(self, *, call: Route, engines: Sequence[EngineLoad], now: float) -> Decision:
        index = self._next % len(engines)
        self._next = index + 1
        return Decision(index, reason="turn")

    def forget(self, *, program: str) -> None:
        pass


class LeastLoaded:
    """The engine with the fewest requests, then the least KV in use."""

    name = "least-loaded"

    def __init__(self, tuning: Tuning | None = None) -> None:
        pass

    def choose(self, *, call: Route, engines: Sequence[EngineLoad], now: float) -> Decision:
        return Decision(least_loaded(engines), reason="least-loaded")

    def forget(self, *, program: str) -> None:
        pass
