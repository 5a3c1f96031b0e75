"""The engine state beside the ratios, and the P99 check where both curves are steady."""

from __future__ import annotations

import pytest

from proxy.sim.simulator.explain import best_cap, engine_state, format_state, p99_where_steady


def row(policy: str, rate: float, seed: int, **values: float) -> dict[str, object]:
    base = {
        "workload": "w",
        "policy": policy,
        "rate": rate,
        "seed": seed,
        "latency_mean": 1.0,
        "latency_p99": 2.0,
        "served_share": 1.0,
        "running_mean": 10.0,
        "waiting_mean": 0.5,
    }
    base.update(values)
    return base  # fmt: skip


def test_state_is_read_at_the_swept_rate_under_fcfs_crossing() -> None:
    rows = [
        row("fcfs", 1.0, 0, waiting_mean=0.2), row("fcfs", 2.0, 0, waiting_mean=3.0),
        row("fcfs", 1.0, 1, waiting_mean=0.4), row("fcfs", 2.0, 1, waiting_mean=5.0),
        row("plas", 1.0, 0, waiting_mean=0.1), row("plas", 1.0, 1, waiting_mean=0.3),
    ]  # fmt: skip
    notes = {
        "0": {"w": {"rate_at_target": {"fcfs": {"latency_mean": {"rate": 1.4}}}}},
        "1": {"w": {"rate_at_target": {"fcfs": {"latency_mean": {"rate": 1.8}}}}},
    }
    state = engine_state(rows, notes)["w"]
    assert state["fcfs_rate_at_target"] == pytest.approx(1.6)
    assert state["rate"] == 1.0
    assert state["policies"]["fcfs"]["waiting_mean"] == pytest.approx(0.3)
    assert state["policies"]["plas"]["waiting_mean"] == pytest.approx(0.2)
    assert "plas" in format_state(engine_state(rows, notes))


def test_p99_is_compared_only_where_both_are_steady() -> None:
    rows = [
        row("fcfs", 1.0, 0, latency_p99=2.0), row("plas", 1.0, 0, latency_p99=2.2),
        row("fcfs", 2.0, 0, latency_p99=4.0), row("plas", 2.0, 0, latency_p99=3.0),
        row("fcfs", 3.0, 0, latency_p99=9.0, served_share=0.5),
        row("plas", 3.0, 0, latency_p99=90.0),
    ]  # fmt: skip
    worst = p99_where_steady(rows, 0.9)["w"]["plas"]
    assert worst == {"worst": pytest.approx(1.1), "rate": 1.0}


def test_the_best_srpt_cap_is_the_one_reaching_the_highest_rate() -> None:
    def at(rate: float) -> dict[str, object]:
        return {"latency_mean": {"rate": rate}}

    notes = {
        "0": {"w": {"rate_at_target": {"srpt-k16": at(1.0), "srpt-k32": at(1.5), "fcfs": at(9)}}},
        "1": {"w": {"rate_at_target": {"srpt-k16": at(1.2), "srpt-k32": at(1.3)}}},
    }
    assert best_cap(notes) == {
        "w": {"best_k": 32, "rate_by_k": {16: pytest.approx(1.1), 32: pytest.approx(1.4)}}
    }
