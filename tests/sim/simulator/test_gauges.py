"""The engine state a sweep point reports: time-weighted running, waiting, KV, prefix hits."""

from __future__ import annotations

import math

from proxy.policies.fcfs import FCFS
from proxy.sim.simulator.gauges import GaugedSimulator, measured_span
from proxy.sim.simulator.results import metrics, steady_window
from proxy.sim.simulator.simconfig import EngineShape, SimConfig
from proxy.sim.simulator.workloads import generate


def gauged(rate: float, *, max_num_seqs: int = 256, cache: bool = True) -> dict[str, float]:
    programs = generate("chatbot", rate=rate, programs=60, seed=3)
    window = steady_window(len(programs), 0.2, 0.2)
    config = SimConfig(shape=EngineShape(max_num_seqs=max_num_seqs, prefix_cache=cache))
    result = GaugedSimulator(config, FCFS(), measured_span(programs, window)).run(programs)
    m = metrics(result, {programs[i].id for i in window})
    return {k: float(getattr(m, k)) for k in (
        "running_mean", "waiting_mean", "waiting_share", "kv_use", "kv_cached",
        "prefix_hit_share", "kv_preemptions")}  # fmt: skip


def test_more_load_means_more_running_and_waiting() -> None:
    light, heavy = gauged(0.1), gauged(3.0)
    assert 0 < light["running_mean"] < heavy["running_mean"]
    assert light["waiting_share"] <= heavy["waiting_share"] <= 1.0
    assert 0.0 <= light["kv_use"] < heavy["kv_use"] <= 1.0


def test_a_small_batch_makes_calls_wait() -> None:
    few = gauged(1.0, max_num_seqs=2)
    assert few["running_mean"] <= 2.0 + 1e-9
    assert few["waiting_mean"] > 1.0
    assert few["waiting_share"] > 0.5


def test_prefix_hits_are_a_share_of_what_could_hit() -> None:
    cached, uncached = gauged(0.5), gauged(0.5, cache=False)
    assert 0.5 < cached["prefix_hit_share"] <= 1.0
    assert cached["kv_cached"] > 0
    assert uncached["prefix_hit_share"] == 0.0
    assert uncached["kv_cached"] == 0.0
    assert not math.isnan(uncached["running_mean"])
