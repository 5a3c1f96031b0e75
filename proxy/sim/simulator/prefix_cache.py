"""The simulator's prefix cache: finished calls' contexts per program on one engine, evicted
in the order ``proxy.core.retention`` gives, and held for their program's next call.

An entry is a program's context after one call (prompt + answer, whole blocks). Evictable
entries live in blocks no request uses: after every step the first in the eviction order
(``EvictionOrder``: least recently used, or by the ranks of the calls waiting for them) go until
the rest fit in the free blocks, as vLLM's free-block pool evicts cached blocks. With a TTL a
finished call's entry is held instead: its blocks are taken from the engine
(``HoldingEngine.hold``), so no request may use them, until the program's next call takes the
entry at the head of the queue, the TTL passes, or running calls need the blocks (``Holds``);
then it becomes an evictable entry like any other. Holds stay within ``max_pinned_share``.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.core.kvcache import EvictionOrder, Held, Holds
from proxy.core.retention import GapLearner, RetentionConfig
from proxy.sim.engine.engine import EngineModel
from proxy.sim.engine.holding import HoldingEngine

Key = tuple[str, int]
"""(program id, index of the call whose context it is)."""


@dataclass(slots=True)
class CacheStats:
    """What the cache did over a run, for reports (time-weighted means over its engine's
    steps)."""

    hits: int = 0
    held_hits: int = 0
    """Hits on an entry that was held when its program's next call took it."""
    misses: int = 0
    """Calls continuing a context whose entry was gone."""
    evicted: int = 0
    holds: int = 0
    expired: int = 0
    shed: int = 0
    span: float = 0.0
    pinned_area: float = 0.0
    kv_area: float = 0.0
    cached_area: float = 0.0

    def mean(self, area: float) -> float:
        return area / self.span if self.span > 0 else 0.0


class PrefixCache:
    """Cached contexts of finished calls on one engine (module docstring). Without an engine
    (or a config) it is the plain LRU cache with nothing held."""

    def __init__(
        self,
        block_size: int,
        retention: RetentionConfig | None = None,
        engine: EngineModel | None = None,
    ) -> None:
        config = retention if retention is not None else RetentionConfig()
        self._block = block_size
        self._order: EvictionOrder[Key] = EvictionOrder(config.evict)
        self._engine = engine if isinstance(engine, HoldingEngine) else None
        capacity = engine.num_blocks if engine is not None else 0
        self._holds: Holds[Key] = Holds(config, capacity if self._engine is not None else 0)
        self._learner = GapLearner(config)
        self.stats = CacheStats()
        self._last = 0.0

    @property
    def tokens(self) -> int:
        """Tokens in evictable entries (they must fit in the engine's free blocks)."""
        return self._order.blocks * self._block

    @property
    def held_tokens(self) -> int:
        return self._holds.pinned * self._block

    def put(
        self, key: Key, tokens: int, *, program: str = "", level: int = 0, now: float = 0.0
    ) -> None:
        """A call finished: cache its context (whole blocks), held if a TTL applies."""
        blocks = tokens // self._block
        self._drop(key)
        if blocks <= 0:
            return
        self._learner.finished(program, now)
        engine = self._engine
        if engine is not None and self._holds.limit:
            ttl = self._learner.ttl(program)
            held, displaced = self._holds.hold(key, program, blocks, level, ttl, now)
            for h in displaced:
                self._unhold(h)
            if held:
                if engine.hold(blocks):
                    self.stats.holds += 1
                    return
                self._holds.release(key)
        self._order.put(key, program, blocks)

    def arrive(self, program: str, level: int, now: float) -> None:
        """A call of ``program`` arrived ranked at ``level``: its gap is learned and its
        entries are awaited at that rank."""
        self._learner.arrived(program, now)
        self._order.waiting(program, level)
        self._holds.set_level(program, level)

    def served(self, program: str) -> None:
        """A call of ``program`` reached the head of the queue: it has taken its context."""
        self._order.served(program)

    def hit(self, key: Key, shared: int, prompt: int) -> int:
        """Prompt tokens that need no prefill (0 on a miss); a held entry is released to the
        call that takes it."""
        held = self._holds.release(key)
        if held is not None:
            self._unhold(held)
            self.stats.held_hits += 1
        cached = self._order.get(key)
        if cached is None:
            self.stats.misses += 1
            return 0
        self._order.touch(key)
        self.stats.hits += 1
        usable = min(cached * self._block, shared, prompt - 1)
        return usable - usable % self._block

    def peek(self, key: Key, shared: int, prompt: int) -> int:
        """What ``hit`` would give now, without marking the entry used (for balancers)."""
        cached = self._order.get(key)
        if cached is None:
            held = self._holds.get(key)
            if held is None:
                return 0
            cached = held.blocks
        usable = min(cached * self._block, shared, prompt - 1)
        return usable - usable % self._block

    def settle(self, model: EngineModel, now: float) -> None:
        """After a step: end expired holds and those running calls need, then evict entries
        until the evictable ones fit in the free blocks."""
        stats = self.stats
        if now > self._last:
            dt = now - self._last
            stats.span += dt
            stats.pinned_area += self._holds.share * dt
            stats.kv_area += model.kv_usage * dt
            stats.cached_area += self.tokens / (model.num_blocks * self._block) * dt
            self._last = now
        engine = self._engine
        if engine is not None and len(self._holds):
            for h in self._holds.expired(now):
                stats.expired += 1
                self._unhold(h)
            # A decode step may need a block per running call: a hold never makes one wait.
            short = engine.num_running - engine.free_blocks
            if short > 0:
                for h in self._holds.shed(short):
                    stats.shed += 1
                    self._unhold(h)
        if self._order.blocks:
            free = round((1.0 - model.kv_usage) * model.num_blocks) * self._block
            while self.tokens > free and self._order.evict() is not None:
                stats.evicted += 1

    def trim(self, free_tokens: int) -> None:
        while self.tokens > free_tokens and self._order.evict() is not None:
            self.stats.evicted += 1

    def _unhold(self, h: Held[Key]) -> None:
        assert self._engine is not None
        self._engine.unhold(h.blocks)
        self._order.put(h.key, h.program, h.blocks)

    def _drop(self, key: Key) -> None:
        held = self._holds.release(key)
        if held is not None:
            assert self._engine is not None
            self._engine.unhold(held.blocks)
        self._order.remove(key)

    def __len__(self) -> int:
        return len(self._order) + len(self._holds)
