"""The bench's pseudo-policies: curves that are a registry policy on engines set up the way a
peer system runs them, so that ``autellix bench`` compares against the systems, not just the
orders.

- ``vllm-0.6``: the paper's first baseline, fcfs on vLLM 0.6.1 as it ships: no chunked prefill
  (a step prefills whole prompts or decodes), no prefix cache, and the per-step CPU time of its
  scheduler, which did not overlap the GPU without multi-step scheduling
  (``VLLM06_STEP_OVERHEAD_S``).
- ``continuum``: Continuum (arXiv 2511.02230): program-level FCFS (``program-fcfs``) with each
  program's KV cache held across its tool calls for a TTL learned from its own gaps
  (``RetentionConfig(ttl="learned")``).
- ``srpt-capped``: the clairvoyant bound with an admission cap: srpt running at most k calls per
  engine (``CapConfig(mode="fixed", k=k)``), k per workload in ``SRPT_CAPPED_K`` (chosen by the
  sweep of ``srpt-k<k>`` curves).

``llmd-las`` and ``turn-priority`` are real policies (``proxy.policies``): they run as any other.

KV retention per curve (``--kv-evict auto``, the default): the engine model is set up as each
system is deployed. The program-aware orders Autellix runs inside vLLM with its plug-in
(``PLUGIN_ORDERS``: plas, atlas, mlfq, srpt and the ``srpt-k`` curves) get the plug-in's
retention, ``PLUGIN_RETENTION``: eviction by the policy's rank and each program's context held
for its learned TTL. Every other curve runs a stock engine (LRU, nothing held): fcfs,
``vllm-0.6``, the llm-d router orders and any plug-in policy given by path; ``continuum`` holds
by its own TTL with LRU eviction, as its paper does. A curve named ``<order>+retain`` (e.g.
``fcfs+retain``) is the order with ``PLUGIN_RETENTION`` whatever the flag says: the ablation
that separates what retention gains from what the order gains.
"""

from __future__ import annotations

import dataclasses
import re

from proxy.core.concurrency import CapConfig
from proxy.core.retention import RetentionConfig
from proxy.sim.engine.cost import CostModel
from proxy.sim.simulator.simconfig import MAX_MODEL_LEN, SimConfig

VLLM_BASELINE = "vllm-0.6"
CONTINUUM = "continuum"
SRPT_CAPPED = "srpt-capped"

# vLLM's v0.6.0 announcement ("vLLM v0.6.0: 2.7x Throughput Improvement and 5x Latency
# Reduction", blog.vllm.ai, 2024-09-05) profiled Llama 3 8B on one H100 before the release:
# the HTTP API server took 33% of the execution time and scheduling (gathering the last step's
# results, scheduling the next, preparing its inputs) 29%; the GPU ran 38% of the time.
VLLM06_GPU_SHARE = 0.38
VLLM06_SCHEDULING_SHARE = 0.29


def _vllm06_step_overhead() -> float:
    # 0.6.0 moved the API server into its own process (on by default), so its 33% leaves the
    # step; multi-step scheduling, which amortises the scheduler's 29%, is opt-in
    # (--num-scheduler-steps), so an engine run as shipped still schedules between forward
    # passes. CPU time does not shrink on a slower GPU: take 29/38 of the H100's step at the
    # reference batch of the service unit (32 decodes at 1,024 tokens, ~8.9 ms): ~6.8 ms
    # added to every step. The async output processor of 0.6.0 hides part of it, so this
    # errs on the slow side.
    h100 = CostModel.llama31_8b_h100()
    _, step = h100.service_weights()
    return step * VLLM06_SCHEDULING_SHARE / VLLM06_GPU_SHARE


VLLM06_STEP_OVERHEAD_S = _vllm06_step_overhead()

SRPT_CAPPED_K = {"chatbot": 48, "react": 32, "lats": 24, "mixed": 16}
"""The cap ``srpt-capped`` runs per workload: the k of 16, 24, 32, 40 and 48 that sustained the
highest rate at the headline target in the sweep of ``srpt-k<k>`` curves (2 seeds, resent
contexts, the plug-in's retention; docs/simulator.md has its curves)."""

PLUGIN_ORDERS = frozenset({"plas", "atlas", "mlfq", "srpt"})
"""Registry orders that run inside the engine with the autellix vLLM plug-in, and so with its
retention under ``--kv-evict auto``."""
PLUGIN_RETENTION = RetentionConfig(evict="rank", ttl="learned")
RETAIN_SUFFIX = "+retain"
FCFS_RETAIN = "fcfs" + RETAIN_SUFFIX

_SRPT_K = re.compile(r"^srpt-k(\d+)$")


def srpt_k(name: str) -> int | None:
    """The cap of an ``srpt-k<k>`` curve, or None for any other name."""
    m = _SRPT_K.match(name)
    return int(m.group(1)) if m else None


def registry_name(name: str) -> str:
    """The registry policy a curve runs: the pseudo-policy's order, or the name itself."""
    name = name.removesuffix(RETAIN_SUFFIX)
    if name == VLLM_BASELINE:
        return "fcfs"
    if name == CONTINUUM:
        return "program-fcfs"
    if name == SRPT_CAPPED or srpt_k(name) is not None:
        return "srpt"
    return name


def engine_config(
    name: str, config: SimConfig, workload: str = "chatbot", *, auto_retention: bool = False
) -> SimConfig:
    """The engines a curve runs on (module docstring); every other curve on ``config``.
    ``auto_retention``: ``--kv-evict auto``, the plug-in's retention for ``PLUGIN_ORDERS``."""
    if name.endswith(RETAIN_SUFFIX) or (auto_retention and _plugin_curve(name)):
        config = dataclasses.replace(config, retention=PLUGIN_RETENTION)
    if name == VLLM_BASELINE:
        shape = dataclasses.replace(
            config.shape,
            chunked_prefill=False,
            prefix_cache=False,
            max_num_batched_tokens=max(MAX_MODEL_LEN, config.shape.max_num_batched_tokens),
            step_overhead_s=VLLM06_STEP_OVERHEAD_S,
        )
        return dataclasses.replace(config, shape=shape)
    if name == CONTINUUM:
        # Continuum's own algorithm: no admission cap, whatever the sweep's default.
        return dataclasses.replace(
            config, retention=RetentionConfig(ttl="learned"), cap=CapConfig()
        )
    k = srpt_k(name)
    if name == SRPT_CAPPED:
        k = SRPT_CAPPED_K.get(workload, SRPT_CAPPED_K["chatbot"])
    if k is not None:
        return dataclasses.replace(config, cap=CapConfig(mode="fixed", k=k))
    return config


def _plugin_curve(name: str) -> bool:
    return name != VLLM_BASELINE and registry_name(name) in PLUGIN_ORDERS
