"""The discrete-event simulator's configuration: the engines' shape, the run's settings, and
how the ``autellix bench`` flags build them (the loop itself is ``des.py``)."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from proxy.core.concurrency import CapConfig
from proxy.core.retention import RetentionConfig
from proxy.sim.engine.cost import LLAMA31_8B_KV_BYTES_PER_TOKEN, PRESETS, CostModel
from proxy.sim.engine.engine import BLOCK_SIZE, DEFAULT_KV_CAPACITY_TOKENS
from proxy.sim.simulator.policy_queue import PreemptConfig
from proxy.sim.simulator.workloads import MAX_CONTEXT

MAX_MODEL_LEN = MAX_CONTEXT
"""The longest context the workloads send (they cut longer ones): vLLM 0.6's token budget per
step when chunked prefill is off."""


@dataclass(frozen=True, slots=True)
class EngineShape:
    """One simulated engine (all engines behind the balancer are alike)."""

    cost: CostModel = field(default_factory=CostModel.llama31_8b_a100)
    max_num_seqs: int = 256
    kv_capacity_tokens: int = DEFAULT_KV_CAPACITY_TOKENS
    max_num_batched_tokens: int = 8192
    block_size: int = BLOCK_SIZE
    prefix_cache: bool = True
    chunked_prefill: bool = True
    """False: vLLM 0.6's default scheduling, where a step either prefills whole prompts of
    waiting requests or decodes the running ones (set ``max_num_batched_tokens`` to the
    longest context, as vLLM 0.6 does with ``max_model_len``)."""
    preemption: Literal["swap", "recompute"] = "swap"
    """How a call preempted for priority gives up its KV: copied to host memory and back
    (the paper's vLLM 0.6.1 swapped) or dropped and recomputed on resume (vLLM V1). The
    engine's own preemptions when KV runs out always recompute, as vLLM V1 does."""
    swap_space_tokens: int = 64 * 2**30 // LLAMA31_8B_KV_BYTES_PER_TOKEN
    """Host memory for swapped KV, in tokens (64 GiB); beyond it a preemption recomputes."""
    swap_bandwidth: float = 25e9
    """Bytes per second each way between GPU and host (PCIe 4.0 x16 as measured, ~25 GB/s)."""
    kv_bytes_per_token: int = LLAMA31_8B_KV_BYTES_PER_TOKEN
    step_overhead_s: float = 0.0
    """CPU time every step adds to the GPU's (an engine whose scheduling and API server do not
    overlap the forward pass, as vLLM 0.6.1's: ``baselines.VLLM06_STEP_OVERHEAD_S``)."""

    def step_cost(self) -> CostModel:
        """The cost model the engine steps by: ``cost`` with the per-step overhead added to
        its fixed part (any non-empty step pays it once)."""
        if self.step_overhead_s <= 0:
            return self.cost
        return dataclasses.replace(self.cost, base_s=self.cost.base_s + self.step_overhead_s)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """engines: how many engines behind the balancer (a name, or ``package.module:Class``).
    rerank_interval_s: virtual seconds between the policy's re-rankings on an engine.
    decode_token_s / prefill_token_s: the service unit (None: as the proxy derives it from the
        cost model: one decode step of 32 sequences at 1k context per generated token).
    oracle: what ``call.oracle_remaining`` (the clairvoyant SRPT's input) holds: the remaining
        service of the call and of its program's calls not yet released ("program"), or of the
        call alone ("call").
    window: (start, end) over which the number of programs in the system is integrated
        (``SimResult.window_area``), for Little's law.
    decode_stretches: run steps that only decode as one stretch (``EngineModel.
        decode_stretch``); False steps one by one: the same results, slower (1.4x on
        chatbot).
    cap: how many calls each engine runs at once (``proxy.core.concurrency``).
    retention: which cached contexts each engine keeps (``proxy.core.retention``)."""

    engines: int = 1
    shape: EngineShape = field(default_factory=EngineShape)
    balancer: str = "autellix"
    preempt: PreemptConfig = field(default_factory=PreemptConfig)
    rerank_interval_s: float = 1.0
    decode_token_s: float | None = None
    prefill_token_s: float | None = None
    oracle: Literal["program", "call"] = "program"
    window: tuple[float, float] | None = None
    decode_stretches: bool = True
    cap: CapConfig = field(default_factory=CapConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)

    def service_weights(self) -> tuple[float, float]:
        """(prefill_token_s, decode_token_s), the unset ones as the proxy derives them
        (``CostModel.service_weights``)."""
        prefill, decode = self.shape.cost.service_weights()
        return self.prefill_token_s or prefill, self.decode_token_s or decode


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The simulator settings the ``autellix bench`` flags describe (``--preset``,
    ``--engines``, ``--balancer``, ``--preemption``, ``--no-prefix-cache``,
    ``--no-chunked-prefill``, ``--max-num-seqs``, ``--rerank-interval``, ``--kv-evict``,
    ``--kv-ttl``, ``--cap``, ``--cap-k``); the caller checks their ranges (a fixed cap without
    k raises ValueError)."""
    chunked = not args.no_chunked_prefill
    if getattr(args, "cap", "off") == "fixed" and getattr(args, "cap_k", None) is None:
        raise ValueError("--cap fixed needs --cap-k")
    shape = EngineShape(
        cost=PRESETS[args.preset](),
        max_num_seqs=args.max_num_seqs,
        prefix_cache=not args.no_prefix_cache,
        preemption=args.preemption,
        chunked_prefill=chunked,
        # Without chunking vLLM takes a whole prompt in one step: its budget is max_model_len.
        max_num_batched_tokens=8192 if chunked else MAX_MODEL_LEN,
    )
    return SimConfig(
        engines=args.engines,
        shape=shape,
        balancer=args.balancer,
        preempt=PreemptConfig(),
        rerank_interval_s=args.rerank_interval,
        retention=RetentionConfig.parse(
            # auto: a stock engine's, replaced per curve (``baselines.engine_config``)
            "lru" if (evict := getattr(args, "kv_evict", "lru")) == "auto" else evict,
            getattr(args, "kv_ttl", None) or "none",
        ),
        cap=CapConfig(mode=getattr(args, "cap", "off"), k=getattr(args, "cap_k", None)),
    )
