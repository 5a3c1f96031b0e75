"""The simulator's engines: one ``EngineSlot`` per engine behind the balancer, each the engine
model with its policy queue, prefix cache (``prefix_cache.py``, ``SimConfig.retention``) and
admission cap (``capping.py``, ``SimConfig.cap``), as ``SimConfig`` describes them."""

from __future__ import annotations

from collections.abc import Callable

from proxy.core.concurrency import for_policy
from proxy.policies.base import Policy
from proxy.sim.engine.holding import HoldingEngine
from proxy.sim.simulator.bookkeeping import EngineSlot
from proxy.sim.simulator.capping import EngineCap
from proxy.sim.simulator.policy_queue import PolicyQueue, Tracked
from proxy.sim.simulator.prefix_cache import PrefixCache
from proxy.sim.simulator.simconfig import SimConfig


def build_engines(
    config: SimConfig, policy: Policy, on_head: Callable[[Tracked], None]
) -> list[EngineSlot]:
    """``config.engines`` engines ordered by ``policy``; ``on_head`` runs when a call reaches
    the head of its engine's queue (it takes its cached context then)."""
    shape = config.shape
    # The cap helps plas only where eviction follows the policy's rank (``for_policy``).
    cap = for_policy(config.cap, policy, retains=config.retention.evict == "rank")
    engines: list[EngineSlot] = []
    for i in range(config.engines):
        queue = PolicyQueue(policy, on_head=on_head)
        model = HoldingEngine(
            cost=shape.step_cost(),
            max_num_seqs=shape.max_num_seqs,
            kv_capacity_tokens=shape.kv_capacity_tokens,
            max_num_batched_tokens=shape.max_num_batched_tokens,
            block_size=shape.block_size,
            queue=queue,
            chunked_prefill=shape.chunked_prefill,
        )
        cache = (
            PrefixCache(shape.block_size, config.retention, model) if shape.prefix_cache else None
        )
        slot = EngineSlot(i, model, queue, cache)
        if cap.mode != "off":
            slot.cap = EngineCap(cap, model)
        engines.append(slot)
    return engines
