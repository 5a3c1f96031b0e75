"""Program-aware KV retention inside vLLM: the core's rules (``proxy.core.retention`` and
``proxy.core.kvcache``) applied to vLLM's own block pool.

Holding a finished call's context uses vLLM's reference counts, as a second request sharing
the prefix would: before vLLM frees the request's blocks, ``BlockPool.touch`` takes one more
reference on its full (hashed) blocks, so freeing the request leaves them out of the free
queue and out of eviction's reach; ``BlockPool.free_blocks`` drops that reference when the
hold ends (the program's next call was admitted, having found the blocks by their hashes; the
TTL passed; running calls need the room; a better-ranked context needs the pin budget). The
blocks then join the free queue as any freed cached block does.

Rank eviction reorders vLLM's free queue (``FreeKVCacheBlockQueue``) before each step that
may evict cached blocks: the blocks of the contexts ``EvictionOrder`` names first are moved
right behind the blocks that hold no cached content (which vLLM reuses first), so that vLLM's
own allocation evicts them before the rest, in its own LRU order. Blocks shared with another
recorded context (a system prompt, a program's earlier turn) are left where vLLM put them.

vLLM internals relied on (checked at start-up; without them retention is off, with a log line):
``kv_cache_manager.get_blocks(request_id).blocks``, ``kv_cache_manager.block_pool`` with
``touch``, ``free_blocks``, ``get_num_free_blocks``, ``num_gpu_blocks`` and
``free_block_queue`` (``remove``, ``prepend_n``, ``fake_free_list_head``), and on blocks
``block_id``, ``ref_cnt``, ``block_hash``, ``is_null``, ``next_free_block``.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from proxy.core.kvcache import EvictionOrder, Held, Holds
from proxy.core.retention import GapLearner, RetentionConfig

logger = logging.getLogger("vllm.autellix.retention")

ENV_EVICT = "AUTELLIX_PLUGIN_KV_EVICT"
ENV_TTL = "AUTELLIX_PLUGIN_KV_TTL"
ENV_PIN_SHARE = "AUTELLIX_PLUGIN_KV_PIN_SHARE"

_POOL_NEEDS = ("touch", "free_blocks", "get_num_free_blocks", "num_gpu_blocks", "free_block_queue")
_QUEUE_NEEDS = ("remove", "prepend_n", "fake_free_list_head")

Event = Callable[..., None]
_FINISHED_OK = frozenset({"FINISHED_STOPPED", "FINISHED_LENGTH_CAPPED"})
F = TypeVar("F", bound=Callable[..., None])


def _guarded(method: F) -> F:
    """Retention must never take the engine down: an error turns it off (vLLM's LRU goes on,
    every hold is released) and is logged once."""

    @functools.wraps(method)
    def wrapper(self: KVRetention, *args: Any, **kwargs: Any) -> None:
        if not self.enabled:
            return
        try:
            method(self, *args, **kwargs)
        except Exception:
            logger.exception("Autellix: KV retention failed in %s", method.__name__)
            self.disable(f"error in {method.__name__}")

    return wrapper  # type: ignore[return-value]


def retention_from_env(env: Mapping[str, str]) -> RetentionConfig:
    """The plug-in's retention setting: ``AUTELLIX_PLUGIN_KV_EVICT`` (lru | rank),
    ``AUTELLIX_PLUGIN_KV_TTL`` (none | learned | seconds), ``AUTELLIX_PLUGIN_KV_PIN_SHARE``
    (0..1). ``ValueError`` naming the variable when one is bad."""
    evict = env.get(ENV_EVICT, "").strip() or "lru"
    ttl = env.get(ENV_TTL, "").strip() or "none"
    share_text = env.get(ENV_PIN_SHARE, "").strip()
    try:
        share = float(share_text) if share_text else None
        return RetentionConfig.parse(evict, ttl, share)
    except ValueError as exc:
        raise ValueError(f"bad {ENV_EVICT} / {ENV_TTL} / {ENV_PIN_SHARE} setting: {exc}") from exc


def step_blocks(scheduler: Any) -> int:
    """The blocks one step of ``scheduler`` may allocate: its token budget in blocks, plus a
    block per running call (a decode may start a new block)."""
    tokens = getattr(scheduler, "max_num_scheduled_tokens", 0)
    block = getattr(scheduler, "block_size", 16) or 16
    return int(tokens) // int(block) + len(scheduler.running) + 1


def missing_internals(kv_cache_manager: Any) -> list[str]:
    """The vLLM internals retention needs that this vLLM lacks (empty: all there)."""
    missing = [] if hasattr(kv_cache_manager, "get_blocks") else ["get_blocks"]
    pool = getattr(kv_cache_manager, "block_pool", None)
    if pool is None:
        return [*missing, "block_pool"]
    missing += [f"block_pool.{name}" for name in _POOL_NEEDS if not hasattr(pool, name)]
    queue = getattr(pool, "free_block_queue", None)
    if queue is not None:
        missing += [f"free_block_queue.{n}" for n in _QUEUE_NEEDS if not hasattr(queue, n)]
    return missing


class KVRetention:
    """The plug-in's retention: the scheduler calls ``arrived``, ``admitted``, ``finishing``
    (before vLLM frees a finished request's blocks) and ``before_step``."""

    def __init__(self, config: RetentionConfig, kv_cache_manager: Any, *, event: Event) -> None:
        self.config = config
        self.enabled = config.active
        self._event = event
        missing = missing_internals(kv_cache_manager) if self.enabled else []
        if missing:
            logger.warning(
                "Autellix: KV retention is off: this vLLM lacks %s; vLLM's own LRU applies",
                ", ".join(missing),
            )
            self.enabled = False
        self._manager = kv_cache_manager
        self._pool = kv_cache_manager.block_pool if self.enabled else None
        capacity = int(self._pool.num_gpu_blocks) if self._pool is not None else 0
        self.holds: Holds[str] = Holds(config, capacity)
        self.order: EvictionOrder[str] = EvictionOrder(config.evict)
        self.learner = GapLearner(config)
        self._held: dict[str, list[Any]] = {}  # request id: the blocks it holds a reference on
        # Freed contexts that rank eviction may move: request id -> (program, [(block, its
        # hash when freed)]), tail blocks first as vLLM frees them.
        self._entries: dict[str, tuple[str, list[tuple[Any, Any]]]] = {}
        self._program_entries: dict[str, set[str]] = {}
        self._refs: Counter[int] = Counter()
        self.moved = 0

    def disable(self, why: str) -> None:
        """Stop retaining (after an error): every hold is dropped, vLLM's LRU applies."""
        if not self.enabled:
            return
        self.enabled = False
        logger.warning("Autellix: KV retention is off (%s); vLLM's own LRU applies", why)
        held, self._held = self._held, {}
        for blocks in held.values():
            try:
                self._pool.free_blocks(reversed(blocks))  # type: ignore[union-attr]
            except Exception:  # best effort: the engine must go on
                logger.exception("Autellix: releasing held KV blocks failed")

    # -- the scheduler's side ------------------------------------------------------------

    @_guarded
    def arrived(self, program: str, level: int, now: float) -> None:
        self.learner.arrived(program, now)
        self.order.waiting(program, level)
        self.holds.set_level(program, level)

    @_guarded
    def admitted(self, program: str, request_id: str) -> None:
        """A call of ``program`` was scheduled: vLLM found its context by the blocks' hashes
        and took its own references, so the program's holds end."""
        self.order.served(program)
        for h in self.holds.release_program(program):
            self._release(h, "taken", by=request_id)

    @_guarded
    def freeing(self, request: Any, tracked: Any, now: float) -> None:
        """vLLM is about to free ``request``'s blocks (``tracked``: the book's record of it,
        or None): a finished call's context may be held; a call that waited and never ran
        no longer waits for its program's context."""
        if tracked is None:
            return
        if getattr(request.status, "name", "") in _FINISHED_OK:
            self.finishing(request.request_id, tracked.program.id, tracked.rank.level, now)
        elif tracked.call.started_at is None:
            self.dropped(tracked.program.id)

    @_guarded
    def dropped(self, program: str) -> None:
        """A waiting call of ``program`` left without being scheduled (aborted)."""
        self.order.served(program)

    @_guarded
    def finishing(self, request_id: str, program: str, level: int, now: float) -> None:
        """``request_id`` finished well and vLLM is about to free its blocks: hold its
        context for the program's next call (within the TTL and the pin bound), else record
        it for rank eviction."""
        self.learner.finished(program, now)
        groups = self._manager.get_blocks(request_id).blocks
        blocks = [
            b for group in groups for b in group if not b.is_null and b.block_hash is not None
        ]
        if not blocks:
            return
        ttl = self.learner.ttl(program)
        held, displaced = self.holds.hold(request_id, program, len(blocks), level, ttl, now)
        for h in displaced:
            self._release(h, "displaced", by=request_id)
        if held:
            self._pool.touch(blocks)  # type: ignore[union-attr]
            self._held[request_id] = blocks
            self._event(
                "kv_held",
                request_id=request_id,
                program=program,
                blocks=len(blocks),
                ttl=round(ttl or 0.0, 3),
                pinned_share=round(self.holds.share, 4),
            )
        else:
            self._record(request_id, program, blocks)

    @_guarded
    def before_step(self, now: float, *, running: int, budget_blocks: int) -> None:
        """End expired holds and those running calls need, then (rank eviction) put the
        worst contexts' blocks first in line for eviction."""
        for h in self.holds.expired(now):
            self._release(h, "expired")
        if len(self.holds):
            short = running + 1 - self._pool.get_num_free_blocks()  # type: ignore[union-attr]
            for h in self.holds.shed(short) if short > 0 else ():
                self._release(h, "shed")
        if self.order.by_rank and self._entries:
            self._reorder(budget_blocks)

    # -- internals -----------------------------------------------------------------------

    def _release(self, h: Held[str], why: str, by: str | None = None) -> None:
        blocks = self._held.pop(h.key, None)
        if blocks is None:
            return
        self._pool.free_blocks(reversed(blocks))  # type: ignore[union-attr]
        self._event(
            "kv_released", request_id=h.key, program=h.program, why=why, by=by, blocks=len(blocks)
        )
        if why != "taken":
            self._record(h.key, h.program, blocks)

    def _record(self, request_id: str, program: str, blocks: list[Any]) -> None:
        if not self.order.by_rank:
            return
        ids = {b.block_id for b in blocks}
        # An earlier context of the program inside this one (its previous turn) is this one.
        for old in list(self._program_entries.get(program, ())):
            if all(b.block_id in ids for b, _ in self._entries[old][1]):
                self._drop(old)
        self._program_entries.setdefault(program, set()).add(request_id)
        entry = [(b, b.block_hash) for b in reversed(blocks)]
        self._entries[request_id] = (program, entry)
        self._refs.update(b.block_id for b, _ in entry)
        self.order.put(request_id, program, len(entry))

    def _drop(self, request_id: str) -> None:
        found = self._entries.pop(request_id, None)
        if found is None:
            return
        program, entry = found
        self._refs.subtract(b.block_id for b, _ in entry)
        self.order.remove(request_id)
        keys = self._program_entries[program]
        keys.discard(request_id)
        if not keys:
            del self._program_entries[program]

    def _reorder(self, budget: int) -> None:
        pool = self._pool
        assert pool is not None
        queue = pool.free_block_queue
        # The head of the queue: blocks without cached content are reused before any
        # eviction. If there are enough of them for a step, nothing is evicted this step.
        head: list[Any] = []
        block = queue.fake_free_list_head.next_free_block
        while block is not None and block.next_free_block is not None and len(head) < budget:
            if block.block_hash is not None:
                break
            head.append(block)
            block = block.next_free_block
        want = budget - len(head)
        if want <= 0:
            return
        victims: list[Any] = []
        dead: list[str] = []
        for key in self.order.iter_order():
            entry = self._entries[key][1]
            alive = False
            for b, h in entry:
                if b.block_hash != h:
                    continue  # evicted and reused since
                alive = True
                if b.ref_cnt == 0 and self._refs[b.block_id] == 1:
                    victims.append(b)
            if not alive:
                dead.append(key)
            if len(victims) >= want:
                break
        for key in dead:
            self._drop(key)
        if not victims:
            return
        for b in head:
            queue.remove(b)
        for b in victims:
            queue.remove(b)
        queue.prepend_n(victims)
        queue.prepend_n(head)
        self.moved += len(victims)

    @property
    def pinned_blocks(self) -> int:
        return self.holds.pinned
