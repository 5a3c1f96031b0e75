"""The circuit breaker: ejection, backoff before re-admission, half-open trial."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from proxy.backends.registry import make_backend
from proxy.config import EngineConfig
from proxy.kvhints.breaker import Breaker
from proxy.kvhints.pool import EnginePool, EngineState


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Healthy:
    """Stands in for a backend's health check and load read (always passing)."""

    def __init__(self, state: EngineState) -> None:
        self.state = state

    async def health(self, session: Any) -> bool:
        return True

    async def load(self, session: Any) -> Any:
        return self.state.load


def _engine(clock: Clock) -> tuple[EnginePool, EngineState]:
    config = EngineConfig(name="e", url="http://e", models=["m"], eject_after=2)
    pool = EnginePool([make_backend(config)], breaker=Breaker(5.0, 12.0), clock=clock)
    state = pool.engines["e"]
    backend: Any = state.backend
    checks = Healthy(state)
    backend.health, backend.load = checks.health, checks.load
    return pool, state


def test_backoff_doubles_up_to_its_cap() -> None:
    breaker = Breaker(backoff_s=5.0, max_backoff_s=12.0)
    assert [breaker.trip(0.0) for _ in range(3)] == [5.0, 10.0, 12.0]
    assert not breaker.may_retry(11.9)
    assert breaker.may_retry(12.0)


async def test_tripped_engine_waits_then_is_tried_half_open(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    clock = Clock()
    pool, state = _engine(clock)
    state.failed("garbled")
    assert state.healthy
    state.failed("garbled")
    assert not state.healthy
    assert "circuit open, next try in 5 s" in (state.last_error or "")
    # Its health check passes, but the wait is not over: still out.
    clock.now += 4.0
    await pool.refresh_one(None, state)  # type: ignore[arg-type]
    assert not state.healthy
    clock.now += 1.0
    await pool.refresh_one(None, state)  # type: ignore[arg-type]
    assert state.healthy
    assert state.breaker.half_open
    assert any("half-open" in r.getMessage() for r in caplog.records)
    # On trial, one failure trips it again, for twice as long.
    state.failed("garbled")
    assert not state.healthy
    clock.now += 9.0
    await pool.refresh_one(None, state)  # type: ignore[arg-type]
    assert not state.healthy
    clock.now += 1.0
    await pool.refresh_one(None, state)  # type: ignore[arg-type]
    assert state.healthy
    # A good call closes it: failures count from eject_after again, backoff from the start.
    state.succeeded()
    assert not state.breaker.half_open
    assert state.breaker.trips == 0
    assert any("circuit closed" in r.getMessage() for r in caplog.records)
    state.failed("garbled")
    assert state.healthy


async def test_an_unreachable_engine_trips_the_breaker_too() -> None:
    clock = Clock()
    pool, state = _engine(clock)
    pool.mark_failed(state, "connection refused")
    await pool.refresh_one(None, state)  # type: ignore[arg-type]
    assert not state.healthy
    clock.now += 5.0
    await pool.refresh_one(None, state)  # type: ignore[arg-type]
    assert state.healthy
