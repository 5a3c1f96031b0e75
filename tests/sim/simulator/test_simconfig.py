"""The simulator's settings: the service unit derived as the proxy derives it, and the
settings the ``autellix bench`` flags build."""

from __future__ import annotations

import argparse

import pytest

from proxy.core.concurrency import CapConfig
from proxy.core.retention import RetentionConfig
from proxy.sim.engine.cost import CostModel
from proxy.sim.simulator.bench import add_bench_arguments
from proxy.sim.simulator.simconfig import SimConfig, config_from_args


def test_service_weights_follow_the_cost_model_unless_given() -> None:
    prefill, decode = SimConfig().service_weights()
    assert decode == pytest.approx(0.0163, rel=0.05)
    assert prefill == pytest.approx(0.000105, rel=0.1)
    assert SimConfig(decode_token_s=0.5, prefill_token_s=0.25).service_weights() == (0.25, 0.5)


def test_bench_flags_build_the_engines_and_the_run() -> None:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    default = config_from_args(parser.parse_args([]))
    # The bench's one default that differs from SimConfig's: the cap where it helps.
    assert default == SimConfig(cap=CapConfig(mode="auto"))
    fixed = config_from_args(parser.parse_args(["--cap", "fixed", "--cap-k", "40"]))
    assert fixed.cap == CapConfig(mode="fixed", k=40)
    with pytest.raises(ValueError, match="--cap-k"):
        config_from_args(parser.parse_args(["--cap", "fixed"]))
    args = parser.parse_args(
        ["--preset", "llama31-8b-h100", "--engines", "3", "--balancer", "least-loaded",
         "--preemption", "recompute", "--no-prefix-cache", "--rerank-interval", "0.5",
         "--max-num-seqs", "32"]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.shape.max_num_seqs == 32
    assert config.engines == 3
    assert config.balancer == "least-loaded"
    assert config.rerank_interval_s == 0.5
    assert config.shape.cost == CostModel.llama31_8b_h100()
    assert config.shape.preemption == "recompute"
    assert not config.shape.prefix_cache


def test_no_chunked_prefill_takes_whole_contexts_per_step() -> None:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    shape = config_from_args(parser.parse_args(["--no-chunked-prefill"])).shape
    assert not shape.chunked_prefill
    # vLLM 0.6's budget without chunking is max_model_len: the workloads' longest context.
    assert shape.max_num_batched_tokens == 32768
    assert config_from_args(parser.parse_args([])).shape.max_num_batched_tokens == 8192


def test_kv_retention_flags() -> None:
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    config = config_from_args(parser.parse_args(["--kv-evict", "rank", "--kv-ttl", "learned"]))
    assert config.retention == RetentionConfig(evict="rank", ttl="learned")
    assert config_from_args(parser.parse_args(["--kv-ttl", "3"])).retention.ttl == 3.0
    with pytest.raises(ValueError, match="ttl"):
        config_from_args(parser.parse_args(["--kv-ttl", "soon"]))
