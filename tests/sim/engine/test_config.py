"""``SimEngineConfig``: the engine model it builds, and the settings it refuses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.cost import CostModel
from proxy.sim.engine.engine import DEFAULT_KV_CAPACITY_TOKENS
from proxy.sim.engine.queues import FCFSQueue


def test_config_builds_the_model_it_describes() -> None:
    config = SimEngineConfig(
        scheduling_policy="fcfs",
        max_num_seqs=8,
        max_num_batched_tokens=64,
        kv_capacity_tokens=1024,
        max_model_len=512,
        cost_preset="llama31-8b-h100",
        cost_overrides={"base_s": 0.5},
    )
    engine = config.engine_model()
    assert isinstance(engine.queue, FCFSQueue)
    assert (engine.max_num_seqs, engine.num_blocks) == (8, 64)
    assert engine.cost.base_s == 0.5
    assert engine.cost.decode_per_seq_s == CostModel.llama31_8b_h100().decode_per_seq_s
    assert SimEngineConfig().engine_model().num_blocks * 16 == DEFAULT_KV_CAPACITY_TOKENS
    assert SimEngineConfig(served_model_names=["a", "b"]).served_names() == ["a", "b"]
    for bad in (
        {"output_len_min": 10, "output_len_max": 5},
        {"max_num_seqs": 300, "max_num_batched_tokens": 256},
        {"kv_capacity_tokens": 1000},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            SimEngineConfig.model_validate(bad)
