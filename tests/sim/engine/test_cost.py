"""The cost model: its arithmetic, and presets that stay near the published figures they cite."""

from __future__ import annotations

import dataclasses

import pytest

from proxy.sim.engine.cost import PRESETS, CostModel

A100 = CostModel.llama31_8b_a100()
H100 = CostModel.llama31_8b_h100()


def test_step_time_sums_its_terms() -> None:
    cost = CostModel(
        base_s=1.0,
        decode_per_seq_s=2.0,
        decode_per_kv_token_s=3.0,
        prefill_per_token_s=5.0,
        prefill_attn_per_pair_s=7.0,
    )
    assert (
        cost.step_time(
            num_decodes=1, decode_context_tokens=10, num_prefill_tokens=100, prefill_attn_pairs=1000
        )
        == 1 + 2 + 30 + 500 + 7000
    )
    empty = cost.step_time(
        num_decodes=0, decode_context_tokens=0, num_prefill_tokens=0, prefill_attn_pairs=0
    )
    assert empty == 0.0


def decode_step(cost: CostModel, batch: int, context: int) -> float:
    return cost.step_time(
        num_decodes=batch,
        decode_context_tokens=batch * context,
        num_prefill_tokens=0,
        prefill_attn_pairs=0,
    )


def test_a100_batch_one_decode_is_near_the_memory_roofline() -> None:
    # 16.06 GB of weights at 2,039 GB/s is 7.9 ms; vLLM reaches ~77% of that: ~10.3 ms.
    assert decode_step(A100, 1, 1024) == pytest.approx(0.0104, rel=0.05)
    assert A100.base_s == pytest.approx(16.06e9 / (2.039e12 * 0.77))


def test_h100_batch_one_decode_matches_the_measured_tpot() -> None:
    # Measured TPOT at concurrency 1 with vLLM on an H100-80GB: 6.48 ms.
    assert decode_step(H100, 1, 512) == pytest.approx(0.00648, rel=0.05)


def test_kv_read_per_token_is_128_kib_at_the_effective_bandwidth() -> None:
    assert A100.decode_per_kv_token_s == pytest.approx(131072 / (2.039e12 * 0.77))
    assert H100.decode_per_kv_token_s == pytest.approx(131072 / (3.35e12 * 0.77))


def test_prefill_grows_with_new_tokens_and_with_context() -> None:
    def prefill(tokens: int, before: int = 0) -> float:
        pairs = tokens * before + tokens * (tokens + 1) // 2
        return A100.step_time(
            num_decodes=0,
            decode_context_tokens=0,
            num_prefill_tokens=tokens,
            prefill_attn_pairs=pairs,
        )

    assert prefill(2048) > 2 * prefill(1024) - A100.base_s
    assert prefill(1024, before=8192) > prefill(1024)
    # A 1,024-token prompt on an A100 in ~0.1 s: ~10k prefill tokens/s at 50% of peak FLOPS.
    assert prefill(1024) == pytest.approx(0.117, rel=0.05)


def test_h100_is_faster_than_a100_everywhere() -> None:
    for field in dataclasses.fields(CostModel):
        assert getattr(H100, field.name) < getattr(A100, field.name)


def test_prefill_decode_ratio() -> None:
    ratio = A100.prefill_decode_ratio()
    assert 0.1 < ratio < 0.3
    assert ratio == pytest.approx(
        A100.prefill_token_cost(context_tokens=1024)
        / (A100.base_s / 32 + A100.decode_per_seq_s + A100.decode_per_kv_token_s * 1024)
    )
    # Bigger batches share the weight read more thinly, so each decode is cheaper.
    assert A100.prefill_decode_ratio(batch_size=256) > ratio
    with pytest.raises(ValueError, match="batch_size"):
        A100.decode_token_cost(batch_size=0)


def test_presets_by_name() -> None:
    assert PRESETS["llama31-8b-a100"]() == A100
    assert PRESETS["llama31-8b-h100"]() == H100
    with pytest.raises(dataclasses.FrozenInstanceError):
        A100.base_s = 0.0  # type: ignore[misc]
