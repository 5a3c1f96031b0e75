"""Program-aware KV retention in the vLLM plug-in (``retention.py``), against vLLM's own block
pool and inside a real vLLM (CPU, tiny random model) with a small KV cache.

Hits are read from the plug-in's record: ``kv_held`` / ``kv_released`` (the plug-in's holds)
and the ``cached`` field of ``scheduled`` (vLLM's own count of prompt tokens its prefix cache
served, from the request's prefill stats).
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from proxy.core.retention import RetentionConfig
from proxy.sim.engine.holding import HoldingEngine
from proxy.sim.simulator.prefix_cache import PrefixCache
from tests.vllm.conftest import VLLMServer, serve, skip_module_without_vllm
from tests.vllm.test_scheduler import complete

skip_module_without_vllm()

# vLLM's import chain (torch) warns of its own deprecations, which this suite turns into errors.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from vllm.v1.core.block_pool import BlockPool
    from vllm.v1.core.kv_cache_utils import BlockHash, make_block_hash_with_group_id

from proxy.backends.vllm_plugin.retention import (  # noqa: E402 (after the skip: it imports vLLM)
    KVRetention,
    missing_internals,
    retention_from_env,
)

pytestmark = pytest.mark.vllm

# -- against vLLM's block pool, no server ----------------------------------------------------


class Engine:
    """vLLM's real BlockPool with a stand-in for the cache manager's request -> blocks map."""

    def __init__(self, blocks: int, config: RetentionConfig) -> None:
        self.pool = BlockPool(num_gpu_blocks=blocks, enable_caching=True, hash_block_size=16)
        self.requests: dict[str, list[Any]] = {}
        self.events: list[tuple[str, dict[str, Any]]] = []
        manager = SimpleNamespace(block_pool=self.pool, get_blocks=self._get_blocks)
        self.retention = KVRetention(config, manager, event=self._event)
        self._hashes = 0

    def _event(self, name: str, **fields: Any) -> None:
        self.events.append((name, fields))

    def _get_blocks(self, request_id: str) -> Any:
        return SimpleNamespace(blocks=(self.requests[request_id],))

    def run(self, request_id: str, n: int) -> list[Any]:
        """A request that computed ``n`` full blocks, now cached by their hashes."""
        blocks = self.pool.get_new_blocks(n)
        for b in blocks:
            self._hashes += 1
            key = make_block_hash_with_group_id(BlockHash(self._hashes.to_bytes(8, "big")), 0)
            self.pool._insert_block_hash(key, b, 16)
        self.requests[request_id] = blocks
        return blocks

    def finish(self, request_id: str, program: str, *, level: int = 0, now: float = 0.0) -> None:
        """vLLM's order: the plug-in's hook, then the request's blocks freed tail first."""
        self.retention.finishing(request_id, program, level, now)
        self.pool.free_blocks(reversed(self.requests.pop(request_id)))

    def fill(self, n: int) -> None:
        """New requests take ``n`` blocks from the free queue's head (evicting what is there)."""
        self.pool.get_new_blocks(n)


def cached(blocks: list[Any]) -> bool:
    return all(b.block_hash is not None for b in blocks)


def test_this_vllm_has_what_retention_needs() -> None:
    engine = Engine(8, RetentionConfig(ttl=1.0))
    assert missing_internals(SimpleNamespace(block_pool=engine.pool, get_blocks=None)) == []
    assert engine.retention.enabled


def test_an_unknown_vllm_falls_back_to_lru_with_a_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    manager = SimpleNamespace(block_pool=SimpleNamespace(touch=None))
    retention = KVRetention(RetentionConfig(ttl=1.0), manager, event=lambda *a, **k: None)
    assert not retention.enabled
    assert "lacks" in caplog.text
    retention.finishing("r", "p", 0, 0.0)  # a no-op, not an error


def test_settings_come_from_the_environment() -> None:
    config = retention_from_env(
        {"AUTELLIX_PLUGIN_KV_EVICT": "rank", "AUTELLIX_PLUGIN_KV_TTL": "learned"}
    )
    assert config == RetentionConfig(evict="rank", ttl="learned")
    assert not retention_from_env({}).active
    with pytest.raises(ValueError, match="AUTELLIX_PLUGIN_KV_TTL"):
        retention_from_env({"AUTELLIX_PLUGIN_KV_TTL": "forever"})


def test_a_held_context_survives_a_full_cache_where_lru_evicts_it() -> None:
    for config, kept in ((RetentionConfig(), False), (RetentionConfig(ttl=60.0), True)):
        engine = Engine(20, config)  # 19 usable: vLLM keeps block 0 as its null block
        context = engine.run("a1", 4)
        engine.finish("a1", "a")
        engine.fill(engine.pool.get_num_free_blocks())  # others need every free block
        assert cached(context) is kept
    # The held blocks were never free; the next call of the program ends the hold.
    assert engine.pool.get_num_free_blocks() == 0
    engine.retention.admitted("a", "a2")
    assert engine.pool.get_num_free_blocks() == 4
    assert ("kv_released", {"request_id": "a1", "program": "a", "why": "taken", "by": "a2",
                            "blocks": 4}) in engine.events  # fmt: skip


def test_holds_end_at_the_ttl_and_within_the_pin_bound() -> None:
    engine = Engine(41, RetentionConfig(ttl=5.0, max_pinned_share=0.25))  # 10 blocks pinned
    engine.run("a1", 6)
    engine.finish("a1", "a", now=0.0)
    engine.run("b1", 6)
    engine.finish("b1", "b", now=1.0)  # a's hold is displaced: both would pass the bound
    assert engine.retention.pinned_blocks == 6
    assert [f["why"] for name, f in engine.events if name == "kv_released"] == ["displaced"]
    engine.retention.before_step(6.5, running=0, budget_blocks=1)  # b's TTL has passed
    assert engine.retention.pinned_blocks == 0
    assert engine.pool.get_num_free_blocks() == 40


def test_rank_eviction_keeps_the_context_a_waiting_call_needs() -> None:
    for evict, kept in (("lru", False), ("rank", True)):
        engine = Engine(12, RetentionConfig(evict=evict))  # type: ignore[arg-type]
        a = engine.run("a1", 4)
        engine.finish("a1", "a")  # freed first: LRU's first victim
        b = engine.run("b1", 4)
        engine.finish("b1", "b")
        engine.retention.arrived("a", 0, 1.0)  # a's next call waits for its context
        free = engine.pool.get_num_free_blocks()
        engine.retention.before_step(1.0, running=0, budget_blocks=free - 4)
        engine.fill(free - 4)  # room for all but one context
        assert cached(a) is kept
        assert cached(b) is not kept


@pytest.mark.parametrize(
    "config",
    [RetentionConfig(), RetentionConfig(evict="rank"), RetentionConfig("rank", 60.0, 0.5)],
    ids=["lru", "rank", "rank+ttl"],
)
def test_the_plugin_and_the_simulator_keep_the_same_context(config: RetentionConfig) -> None:
    # One event sequence through both users of the core: a's context is freed first, then
    # b's (ranked worse); a's next call arrives and waits; the cache must then give up all but
    # one context.
    engine = Engine(12, config)
    a = engine.run("a1", 4)
    engine.finish("a1", "a")
    b = engine.run("b1", 4)
    engine.finish("b1", "b", level=3)
    engine.retention.arrived("a", 0, 1.0)
    free = engine.pool.get_num_free_blocks()
    engine.retention.before_step(1.0, running=0, budget_blocks=free - 4)
    engine.fill(free - 4)
    plugin = {"a": cached(a), "b": cached(b)}

    cache = PrefixCache(16, config, HoldingEngine(kv_capacity_tokens=11 * 16, block_size=16))
    cache.put(("a", 0), 64, program="a", now=0.0)
    cache.put(("b", 0), 64, program="b", level=3, now=0.0)
    cache.arrive("a", 0, 1.0)
    cache.settle(cache_engine(cache), 1.0)
    cache.trim(4 * 16)
    simulator = {p: cache.peek((p, 0), 64, 100) > 0 for p in "ab"}
    assert plugin == simulator
    assert engine.retention.pinned_blocks * 16 == cache.held_tokens == (64 if config.holds else 0)
    assert plugin["a"] is (config.active), "lru keeps the later context, the others a's"


def cache_engine(cache: PrefixCache) -> HoldingEngine:
    engine = cache._engine  # the simulator's engine the cache holds blocks in
    assert engine is not None
    return engine


# -- inside a real vLLM ---------------------------------------------------------------------

BLOCK = 32  # tokens (vLLM's CPU default, 128, would leave too few blocks to see an order)
BLOCKS = 48  # 1,536 tokens of KV: a few prompts fill it
CONTEXT = 160  # tokens: 5 full blocks


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    """A vLLM of its own with a small KV cache, rank eviction and a long TTL, and room to
    hold one context only (so a second one displaces the first, which is then under LRU)."""
    root: Path = tmp_path_factory.mktemp("vllm-retention")
    args = (
        *("--num-gpu-blocks-override", str(BLOCKS), "--block-size", str(BLOCK)),
        *("--max-model-len", "512"),
    )
    env = {
        "AUTELLIX_PLUGIN_KV_EVICT": "rank",
        "AUTELLIX_PLUGIN_KV_TTL": "600",
        "AUTELLIX_PLUGIN_KV_PIN_SHARE": "0.15",  # 7 blocks: one context
    }
    with serve(root, args=args, environ=env) as server:
        yield server


def body(program: str, call: str, prompt: list[int], max_tokens: int) -> dict[str, Any]:
    return {
        "model": "tiny",
        "prompt": prompt,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
        "priority": 0,
        "vllm_xargs": {
            "autellix_program": program,
            "autellix_thread": "main",
            "autellix_call": call,
            "autellix_service": 0.0,
            "autellix_level": 0,
        },
    }


def event(events: list[dict[str, Any]], name: str, call: str) -> dict[str, Any]:
    (found,) = [e for e in events if e["event"] == name and e.get("call") == call]
    return found


async def test_a_retained_context_hits_where_lru_misses(small_server: VLLMServer) -> None:
    server, rng = small_server, random.Random(11)

    def tokens(n: int) -> list[int]:
        return [rng.randrange(10, 500) for _ in range(n)]

    a, b = tokens(CONTEXT), tokens(CONTEXT)
    await complete(server, body("b", "b1", b, 8))  # held first ...
    await complete(server, body("a", "a1", a, 8))  # ... then displaced by a's context
    for i in range(6):  # other programs' prompts fill the cache several times over
        await complete(server, body(f"x{i}", f"x{i}", tokens(400), 1))
    await complete(server, body("a", "a2", a + tokens(32), 8))
    await complete(server, body("b", "b2", b + tokens(32), 8))

    events = server.events()
    assert any(e["event"] == "kv_held" and e["request_id"] == event(events, "finished", "a1")["req"]
               for e in events)  # fmt: skip
    b1, a1 = event(events, "finished", "b1")["req"], event(events, "finished", "a1")["req"]
    released = [e for e in events if e["event"] == "kv_released" and e["request_id"] in (a1, b1)]
    assert [(e["request_id"], e["why"]) for e in released] == [(b1, "displaced"), (a1, "taken")]
    # vLLM's own prefix cache: a's next call found its whole context, b's found none of it.
    assert event(events, "scheduled", "a2")["cached"] == CONTEXT
    assert event(events, "scheduled", "b2")["cached"] == 0
