"""The engine's runtime state: the simulated clock and request ids."""

from __future__ import annotations

import pytest

from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.state import SimClock, SimState


def test_the_clock_runs_time_scale_times_slower_than_simulated_time() -> None:
    real = [10.0]
    clock = SimClock(0.01, real=lambda: real[0])
    real[0] = 11.0
    clock.start()
    assert clock.now() == 0.0
    real[0] = 11.5
    assert clock.now() == pytest.approx(50.0)
    assert clock.real_delay(60.0) == pytest.approx(0.1)
    assert clock.real_delay(10.0) == 0.0


def test_request_ids_count_up_behind_a_per_engine_prefix() -> None:
    config = SimEngineConfig()
    state = SimState(config=config, model=config.engine_model(), clock=SimClock(1.0))
    first, second = state.next_id(), state.next_id()
    assert first != second
    assert first[:-1] == second[:-1] == state.id_prefix
    assert state.label == "sim-llama-3.1-8b"
