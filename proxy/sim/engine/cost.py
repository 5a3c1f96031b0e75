"""How long one engine step takes: a linear model of a continuous-batching forward pass.

A step runs one forward pass over a batch that mixes prefill chunks (many new tokens of a few
sequences) with decodes (one new token of each of many sequences). Its time is modelled as

    base                                     weights streamed from HBM once per step
    + decode_per_seq  x decoding sequences   GEMM work of one token (2 x params FLOPs)
    + decode_per_kv   x their context tokens KV cache read by decode attention
    + prefill_per_token x prefilled tokens   GEMM work of each prefilled token
    + prefill_attn    x (query, key) pairs   causal attention of the prefilled tokens

Terms are summed rather than overlapped (a roofline would take max(memory, compute)); the error
is small where either side dominates and errs on the slow side in between. The presets are
derived in ``docs/sim-engine.md``; every figure used is repeated next to the constant below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# Llama-3.1-8B (Meta model card and config.json): 8.03e9 parameters, 32 layers, 32 query heads
# and 8 KV heads of 128 dims (hidden 4096), bf16 weights and KV.
LLAMA31_8B_PARAMS = 8.03e9
LLAMA31_8B_WEIGHT_BYTES = LLAMA31_8B_PARAMS * 2
# 32 layers x 8 KV heads x 128 dims x 2 (K and V) x 2 bytes = 128 KiB per token.
LLAMA31_8B_KV_BYTES_PER_TOKEN = 32 * 8 * 128 * 2 * 2
# Two FLOPs (multiply, add) per parameter per token through the linear layers.
LLAMA31_8B_FLOPS_PER_TOKEN = 2 * LLAMA31_8B_PARAMS
# Attention score and value products: 2 x 2 FLOPs x 4096 (query heads x dims) x 32 layers,
# per pair of a query token and a key token it attends to.
LLAMA31_8B_ATTN_FLOPS_PER_PAIR = 4 * 4096 * 32

# NVIDIA datasheets: A100-SXM4-80GB 2,039 GB/s HBM2e, 312 TFLOPS dense BF16;
# H100-SXM5-80GB 3.35 TB/s HBM3, 989 TFLOPS dense BF16.
A100_80GB_BANDWIDTH = 2.039e12
A100_BF16_FLOPS = 312e12
H100_SXM_BANDWIDTH = 3.35e12
H100_BF16_FLOPS = 989e12

# Fraction of peak bandwidth that vLLM's decode reaches: Llama-3.1-8B at batch 1 on an
# A100-40GB decodes ~75 tokens/s, ~77% of its 1,555 GB/s ceiling (J. Musgrave, "vLLM
# throughput-latency sweep on NVIDIA A100", vLLM 0.23). The same factor predicts 6.3 ms per
# token at batch 1 on an H100-80GB, against 6.48 ms measured there (InferenceBench
# concurrency-sweep recipe, vLLM 0.21).
MEMORY_EFFICIENCY = 0.77
# Fraction of peak FLOPS that large bf16 GEMMs sustain in prefill. An assumption, not a
# measurement: it gives ~9.7k prefill tokens/s on an A100, ~31k on an H100.
COMPUTE_EFFICIENCY = 0.5


@dataclass(frozen=True, slots=True)
class CostModel:
    """Seconds one engine step takes, from the shape of the batch it runs. Immutable and pure."""

    base_s: float
    """Fixed cost of any non-empty step: reading the weights once."""
    decode_per_seq_s: float
    """Per decoding sequence in the step (its one token through the linear layers)."""
    decode_per_kv_token_s: float
    """Per context token a decoding sequence attends to (KV read from HBM)."""
    prefill_per_token_s: float
    """Per prefilled (new, non-decode) token in the step."""
    prefill_attn_per_pair_s: float
    """Per (prefilled query token, key token) pair of causal attention."""

    @classmethod
    def from_hardware(
        cls,
        *,
        bandwidth: float,
        flops: float,
        memory_efficiency: float = MEMORY_EFFICIENCY,
        compute_efficiency: float = COMPUTE_EFFICIENCY,
    ) -> CostModel:
        """Llama-3.1-8B in bf16 on one GPU with ``bandwidth`` bytes/s and ``flops`` FLOP/s."""
        bw = bandwidth * memory_efficiency
        fl = flops * compute_efficiency
        return cls(
            base_s=LLAMA31_8B_WEIGHT_BYTES / bw,
            decode_per_seq_s=LLAMA31_8B_FLOPS_PER_TOKEN / fl,
            decode_per_kv_token_s=LLAMA31_8B_KV_BYTES_PER_TOKEN / bw,
            prefill_per_token_s=LLAMA31_8B_FLOPS_PER_TOKEN / fl,
            prefill_attn_per_pair_s=LLAMA31_8B_ATTN_FLOPS_PER_PAIR / fl,
        )

    @classmethod
    def llama31_8b_a100(cls) -> CostModel:
        """Llama-3.1-8B bf16 on one A100-SXM4-80GB (the default)."""
        return cls.from_hardware(bandwidth=A100_80GB_BANDWIDTH, flops=A100_BF16_FLOPS)

    @classmethod
    def llama31_8b_h100(cls) -> CostModel:
        """Llama-3.1-8B bf16 on one H100-SXM5-80GB."""
        return cls.from_hardware(bandwidth=H100_SXM_BANDWIDTH, flops=H100_BF16_FLOPS)

    def step_time(
        self,
        *,
        num_decodes: int,
        decode_context_tokens: int,
        num_prefill_tokens: int,
        prefill_attn_pairs: int,
    ) -> float:
        """Duration of one step; 0 for an empty step (nothing runs, nothing is read)."""
        if num_decodes == 0 and num_prefill_tokens == 0:
            return 0.0
        return (
            self.base_s
            + self.decode_per_seq_s * num_decodes
            + self.decode_per_kv_token_s * decode_context_tokens
            + self.prefill_per_token_s * num_prefill_tokens
            + self.prefill_attn_per_pair_s * prefill_attn_pairs
        )

    def decode_token_cost(self, *, batch_size: int = 32, context_tokens: int = 1024) -> float:
        """Seconds one sequence's decode step costs in a batch of ``batch_size`` decodes at
        ``context_tokens`` each: its share of the base plus its own terms."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        return (
            self.base_s / batch_size
            + self.decode_per_seq_s
            + self.decode_per_kv_token_s * context_tokens
        )

    def prefill_token_cost(self, *, context_tokens: int = 1024) -> float:
        """Seconds one prefilled token costs in a prompt of ``context_tokens`` (mean causal
        attention span is half the prompt; the base is paid by the decodes it rides with)."""
        return self.prefill_per_token_s + self.prefill_attn_per_pair_s * context_tokens / 2

    def service_weights(self) -> tuple[float, float]:
        """(prefill_token_s, decode_token_s): the proxy's default service unit on an engine of
        this speed. A generated token costs one decode step of a moderately loaded engine (32
        sequences at 1,024 tokens of context), a prompt token its share of a prefill."""
        decode = self.step_time(
            num_decodes=32,
            decode_context_tokens=32 * 1024,
            num_prefill_tokens=0,
            prefill_attn_pairs=0,
        )
        return self.prefill_token_cost(context_tokens=1024), decode

    def prefill_decode_ratio(self, *, batch_size: int = 32, context_tokens: int = 1024) -> float:
        """Cost of one prefilled token relative to one decode step of one sequence.

        The process table weighs prompt tokens by this to turn (prompt, generated) token counts
        into one unit of service. The reference point (a batch of 32 decodes at 1,024 tokens of
        context) is a moderately loaded engine: about 0.21 on the A100 preset, 0.12 on the H100.
        """
        return self.prefill_token_cost(context_tokens=context_tokens) / self.decode_token_cost(
            batch_size=batch_size, context_tokens=context_tokens
        )


PRESETS = {
    "llama31-8b-a100": CostModel.llama31_8b_a100,
    "llama31-8b-h100": CostModel.llama31_8b_h100,
}
"""Cost models by the preset names that ``SimEngineConfig.cost_preset`` accepts."""
DEFAULT_PRESET: Final = "llama31-8b-a100"
"""``SimEngineConfig.cost_preset``'s default."""
