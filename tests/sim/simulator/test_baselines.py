"""The bench's pseudo-policies: the order each runs and the engines it runs on."""

from __future__ import annotations

import pytest

from proxy.sim.simulator.baselines import (
    SRPT_CAPPED_K,
    VLLM06_STEP_OVERHEAD_S,
    engine_config,
    registry_name,
    srpt_k,
)
from proxy.sim.simulator.simconfig import SimConfig


def test_each_pseudo_policy_runs_a_registry_order() -> None:
    assert registry_name("vllm-0.6") == "fcfs"
    assert registry_name("continuum") == "program-fcfs"
    assert registry_name("srpt-capped") == "srpt"
    assert registry_name("srpt-k48") == "srpt"
    assert registry_name("plas") == "plas"
    assert (srpt_k("srpt-k48"), srpt_k("srpt"), srpt_k("srpt-kx")) == (48, None, None)


def test_vllm_06_pays_its_scheduler_time_every_step() -> None:
    # 29/38 of an ~8.9 ms H100 step: about 6.8 ms.
    assert pytest.approx(0.0068, abs=0.0005) == VLLM06_STEP_OVERHEAD_S
    shape = engine_config("vllm-0.6", SimConfig()).shape
    assert (shape.chunked_prefill, shape.prefix_cache) == (False, False)
    cost = shape.step_cost()
    assert cost.base_s == pytest.approx(SimConfig().shape.cost.base_s + VLLM06_STEP_OVERHEAD_S)
    # The policy's unit of service is the GPU's, not the slower engine's.
    assert engine_config("vllm-0.6", SimConfig()).service_weights() == SimConfig().service_weights()


def test_continuum_holds_contexts_and_srpt_capped_caps() -> None:
    assert engine_config("continuum", SimConfig()).retention.ttl == "learned"
    for workload, k in SRPT_CAPPED_K.items():
        cap = engine_config("srpt-capped", SimConfig(), workload).cap
        assert (cap.mode, cap.k) == ("fixed", k)
    assert engine_config("plas", SimConfig()) == SimConfig()
