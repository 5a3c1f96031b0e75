"""The simulator's prefix cache with program-aware retention: rank eviction, held contexts
taken from the engine's blocks, and their release by the next call, the TTL or running calls'
need; plus a whole run where retention raises the prefix-hit share."""

from __future__ import annotations

from proxy.core.retention import RetentionConfig
from proxy.policies.plas import PLAS
from proxy.sim.engine.engine import EngineRequest
from proxy.sim.engine.holding import HoldingEngine
from proxy.sim.simulator.des import Simulator
from proxy.sim.simulator.prefix_cache import PrefixCache
from proxy.sim.simulator.simconfig import EngineShape, SimConfig
from proxy.sim.simulator.workloads import generate


def model(blocks: int = 100) -> HoldingEngine:
    return HoldingEngine(
        kv_capacity_tokens=blocks * 4, block_size=4, max_num_seqs=4, max_num_batched_tokens=64
    )


def test_holding_engine_lends_free_blocks_only() -> None:
    engine = model(10)
    assert engine.hold(6)
    assert not engine.hold(5)
    assert engine.kv_usage == 0.6
    engine.unhold(6)
    assert engine.free_blocks == 10


def test_a_held_context_survives_eviction_and_is_released_by_its_next_call() -> None:
    engine = model(100)
    cache = PrefixCache(4, RetentionConfig(ttl=5.0, max_pinned_share=0.5), engine)
    cache.put(("p", 0), 40, program="p", level=0, now=0.0)
    assert cache.held_tokens == 40
    assert engine.held_blocks == 10
    cache.put(("q", 0), 204, program="q", level=0, now=0.0)  # over the bound: evictable
    assert cache.tokens == 204
    cache.trim(0)  # the cache must give up everything it can
    assert cache.tokens == 0
    assert cache.peek(("p", 0), 40, 50) == 40
    assert cache.hit(("p", 0), 40, 50) == 40
    assert engine.held_blocks == 0
    assert cache.stats.held_hits == 1
    assert cache.tokens == 40  # now an ordinary cached entry


def test_holds_end_at_their_ttl_and_when_running_calls_need_blocks() -> None:
    engine = model(20)
    cache = PrefixCache(4, RetentionConfig(ttl=1.0, max_pinned_share=0.5), engine)
    cache.put(("p", 0), 40, program="p", now=0.0)
    cache.settle(engine, 0.5)
    assert cache.held_tokens == 40
    cache.settle(engine, 1.0)
    assert cache.held_tokens == 0
    assert cache.stats.expired == 1
    cache.put(("q", 0), 40, program="q", now=2.0)
    for i in range(4):  # four running calls that take 8 of the 10 blocks left
        engine.add(EngineRequest(id=f"r{i}", prompt_tokens=8, target_tokens=4, max_tokens=4), 2.0)
    engine.step(2.0)
    assert engine.free_blocks == 2
    cache.settle(engine, 2.1)
    assert cache.held_tokens == 0
    assert cache.stats.shed == 1


def test_rank_eviction_keeps_the_context_a_waiting_call_needs() -> None:
    def survivor(evict: str) -> int:
        cache = PrefixCache(4, RetentionConfig(evict=evict))  # type: ignore[arg-type]
        cache.put(("old", 0), 40, program="old")
        cache.put(("new", 0), 40, program="new")
        cache.arrive("old", level=2, now=1.0)  # old's next call waits for its context
        cache.trim(40)
        return cache.hit(("old", 0), 40, 50)

    assert survivor("lru") == 0
    assert survivor("rank") == 40


def test_no_retention_is_the_plain_lru_cache() -> None:
    engine = model(100)
    cache = PrefixCache(4, RetentionConfig(), engine)
    cache.put(("p", 0), 40, program="p", now=0.0)
    assert cache.held_tokens == 0
    assert engine.held_blocks == 0
    assert cache.tokens == 40


def test_retention_raises_the_prefix_hit_share_of_a_loaded_run() -> None:
    # A small engine under chatbot load: contexts are evicted during their tool pauses.
    programs = generate("chatbot", rate=0.6, programs=60, seed=1)
    shape = EngineShape(kv_capacity_tokens=60_000, max_num_seqs=64)

    def run(retention: RetentionConfig) -> tuple[int, int]:
        sim = Simulator(SimConfig(shape=shape, retention=retention), PLAS())
        result = sim.run(programs)
        cache = sim.engines[0].cache
        assert cache is not None
        assert sim.engines[0].model.held_blocks * 16 == cache.held_tokens
        return result.cached_tokens, cache.stats.held_hits

    lru, lru_held = run(RetentionConfig())
    kept, held = run(RetentionConfig(evict="rank", ttl="learned"))
    assert lru_held == 0
    assert held > 0
    assert kept > lru
