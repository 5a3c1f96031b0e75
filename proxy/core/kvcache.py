"""The cache side of program-aware KV retention (``proxy.core.retention``): the order cached
contexts are evicted in (``EvictionOrder``) and the contexts held for their programs' next
calls within the pin bound (``Holds``). Pure and synchronous: the simulator's prefix cache and
the vLLM plug-in own the blocks and apply what these decide."""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from proxy.core.retention import EvictOrder, RetentionConfig

K = TypeVar("K", bound=Hashable)

IDLE = 1 << 30
"""The level of a context no waiting call is known to need: evicted before any that one is."""


class EvictionOrder(Generic[K]):
    """Evictable cached contexts and the order they go in. Each entry is a key, the program it
    belongs to and its size in blocks.

    Under "lru" the least recently used entry goes first, as in the engines. Under "rank" an
    entry's level is that of its program's waiting calls: ``waiting`` when a call of the
    program arrives, ``served`` when it is admitted (it has taken its context). First to go
    are the entries no waiting call needs (``IDLE``), least recently used first: they are
    either past their program's pause or their program has ended. Then the entries of waiting
    calls, worst-ranked (highest level) first and, within a level, the latest arrival first:
    under the policy's order those are used last (Belady's rule, with the queue as the
    forecast). LRU does the opposite under load: a call that waits long is one whose context
    was used long ago, so its context goes first."""

    def __init__(self, evict: EvictOrder) -> None:
        self.by_rank = evict == "rank"
        self._entries: dict[K, _Entry] = {}
        self._programs: dict[str, set[K]] = {}
        # program: (calls waiting, best level, when it began to wait, in the order's clock)
        self._waiting: dict[str, tuple[int, int, int]] = {}
        # Per level a heap of (sort key, version, key); stale items are skipped when met.
        self._heaps: dict[int, list[tuple[int, int, K]]] = {}
        self._counts: dict[int, int] = {}
        self._clock = 0
        self.blocks = 0

    def level(self, program: str) -> int:
        """The level ``program``'s entries are evicted at (0 for all under "lru")."""
        if not self.by_rank:
            return 0
        waiting = self._waiting.get(program)
        return IDLE if waiting is None else waiting[1]

    def put(self, key: K, program: str, blocks: int) -> None:
        """Add (or replace) an entry, most recently used."""
        self.remove(key)
        self._clock += 1
        entry = _Entry(program, blocks, self.level(program), self._clock)
        self._entries[key] = entry
        self._programs.setdefault(program, set()).add(key)
        self.blocks += blocks
        self._counts[entry.level] = self._counts.get(entry.level, 0) + 1
        self._push(key, entry)

    def touch(self, key: K) -> None:
        """The entry was used: most recently used."""
        entry = self._entries.get(key)
        if entry is not None:
            self._clock += 1
            entry.used = self._clock
            self._push(key, entry)

    def get(self, key: K) -> int | None:
        entry = self._entries.get(key)
        return None if entry is None else entry.blocks

    def waiting(self, program: str, level: int) -> None:
        """A call of ``program`` arrived (or was re-ranked) and waits at ``level``."""
        if not self.by_rank:
            return
        count, best, since = self._waiting.get(program, (0, IDLE, 0))
        if not count:
            self._clock += 1
            since = self._clock
        self._waiting[program] = (count + 1, min(best, level), since)
        self._relevel(program)

    def served(self, program: str) -> None:
        """One of ``program``'s waiting calls was admitted: it has taken its context."""
        waiting = self._waiting.get(program)
        if waiting is None:
            return
        if waiting[0] <= 1:
            del self._waiting[program]
        else:
            self._waiting[program] = (waiting[0] - 1, waiting[1], waiting[2])
        self._relevel(program)

    def forget(self, program: str) -> None:
        """The program ended: none of its calls waits any more."""
        if self._waiting.pop(program, None) is not None:
            self._relevel(program)

    def remove(self, key: K) -> int:
        """Drop an entry (used up, or held again); its blocks, 0 if it was not here."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return 0
        self._counts[entry.level] -= 1
        keys = self._programs[entry.program]
        keys.discard(key)
        if not keys:
            del self._programs[entry.program]
        self.blocks -= entry.blocks
        return entry.blocks

    def victim(self) -> K | None:
        """The entry to evict next (class docstring)."""
        levels = [level for level, n in self._counts.items() if n > 0]
        if not levels:
            return None
        level = max(levels)
        heap = self._heaps[level]
        while True:
            _, version, key = heap[0]
            entry = self._entries.get(key)
            if entry is not None and entry.version == version and entry.level == level:
                return key
            heapq.heappop(heap)

    def evict(self) -> tuple[K, int] | None:
        key = self.victim()
        if key is None:
            return None
        return key, self.remove(key)

    def order(self) -> list[K]:
        """Every entry, first to be evicted first."""
        return list(self.iter_order())

    def iter_order(self) -> Iterator[K]:
        """The entries, first to be evicted first, as far as the caller reads (it must not
        change the order meanwhile)."""
        for level in sorted((lv for lv, n in self._counts.items() if n > 0), reverse=True):
            live = [
                item
                for item in self._heaps[level]
                if (e := self._entries.get(item[2])) is not None
                and e.version == item[1]
                and e.level == level
            ]
            live.sort()
            for _, _, key in live:
                yield key

    def _sort_key(self, entry: _Entry) -> int:
        # Idle (and "lru"): least recently used first. Waiting: the program that began to
        # wait last goes first (FCFS within a level serves it last), then least recently used.
        if entry.level in (0, IDLE):
            return entry.used
        since = self._waiting[entry.program][2]
        return -since * (1 << 32) + entry.used

    def _push(self, key: K, entry: _Entry) -> None:
        entry.version += 1
        heap = self._heaps.setdefault(entry.level, [])
        heapq.heappush(heap, (self._sort_key(entry), entry.version, key))
        if len(heap) > 2 * self._counts[entry.level] + 64:  # mostly stale: rebuild
            live = [
                item
                for item in heap
                if (e := self._entries.get(item[2])) is not None
                and e.version == item[1]
                and e.level == entry.level
            ]
            heapq.heapify(live)
            self._heaps[entry.level] = live

    def _relevel(self, program: str) -> None:
        level = self.level(program)
        for key in self._programs.get(program, ()):
            entry = self._entries[key]
            if entry.level != level or level not in (0, IDLE):
                self._counts[entry.level] -= 1
                entry.level = level
                self._counts[level] = self._counts.get(level, 0) + 1
                self._push(key, entry)  # at its own place in the level: its last use

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


@dataclass(slots=True)
class _Entry:
    program: str
    blocks: int
    level: int
    used: int
    version: int = 0


@dataclass(slots=True)
class Held(Generic[K]):
    key: K
    program: str
    blocks: int
    until: float
    level: int
    seq: int


class Holds(Generic[K]):
    """Held contexts: pinned for their program's next call, within ``max_pinned_share`` of
    ``capacity_blocks``. The caller keeps the blocks; this decides which holds exist and which
    end, and returns what it released so the caller frees it."""

    def __init__(self, config: RetentionConfig, capacity_blocks: int) -> None:
        self.config = config
        self.limit = int(config.max_pinned_share * capacity_blocks) if config.holds else 0
        self.capacity = capacity_blocks
        self.pinned = 0
        self._held: dict[K, Held[K]] = {}
        self._programs: dict[str, set[K]] = {}
        self._deadlines: list[tuple[float, int, K]] = []
        self._seq = 0
        self.refused = 0
        """Holds refused or cut short for the bound (the bound is binding when this grows)."""

    def hold(
        self, key: K, program: str, blocks: int, level: int, ttl: float | None, now: float
    ) -> tuple[bool, list[Held[K]]]:
        """Hold ``blocks`` for ``key`` until ``now + ttl``. Returns whether it is held and the
        holds displaced to make room: under "rank" a better-ranked context displaces the worst
        held one (largest level, then oldest); under "lru" the oldest."""
        if ttl is None or ttl <= 0 or blocks <= 0 or blocks > self.limit:
            return False, []
        displaced: list[Held[K]] = []
        self.release(key)
        while self.pinned + blocks > self.limit:
            worst = self._worst()
            if worst is None or (self.config.evict == "rank" and worst.level < level):
                self.refused += 1
                for h in displaced:  # nothing gained: put them back
                    self._add(h)
                return False, []
            displaced.append(self._drop(worst.key))
        if displaced:
            self.refused += 1
        self._seq += 1
        self._add(Held(key, program, blocks, now + ttl, level, self._seq))
        return True, displaced

    def _add(self, h: Held[K]) -> None:
        self._held[h.key] = h
        self._programs.setdefault(h.program, set()).add(h.key)
        self.pinned += h.blocks
        heapq.heappush(self._deadlines, (h.until, h.seq, h.key))

    def _worst(self) -> Held[K] | None:
        if not self._held:
            return None
        if self.config.evict == "rank":
            return max(self._held.values(), key=lambda h: (h.level, -h.seq))
        return min(self._held.values(), key=lambda h: h.seq)

    def _drop(self, key: K) -> Held[K]:
        h = self._held.pop(key)
        keys = self._programs[h.program]
        keys.discard(key)
        if not keys:
            del self._programs[h.program]
        self.pinned -= h.blocks
        return h

    def get(self, key: K) -> Held[K] | None:
        return self._held.get(key)

    def set_level(self, program: str, level: int) -> None:
        """The program's rank changed (its next call arrived, ranked anew)."""
        for key in self._programs.get(program, ()):
            self._held[key].level = level

    def release(self, key: K) -> Held[K] | None:
        """End the hold on ``key`` (its program's next call took it), if there is one."""
        return self._drop(key) if key in self._held else None

    def release_program(self, program: str) -> list[Held[K]]:
        """End every hold of ``program``."""
        return [self._drop(k) for k in sorted(self._programs.get(program, ()), key=str)]

    def expired(self, now: float) -> list[Held[K]]:
        """End the holds whose TTL has passed by ``now``."""
        out: list[Held[K]] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, seq, key = heapq.heappop(deadlines)
            h = self._held.get(key)
            if h is not None and h.seq == seq:
                out.append(self._drop(key))
        return out

    def shed(self, blocks: int) -> list[Held[K]]:
        """Running calls need ``blocks`` more than are free: end holds, worst first, until
        they have them (a hold never costs a running call its place)."""
        out: list[Held[K]] = []
        freed = 0
        while freed < blocks and self._held:
            worst = self._worst()
            assert worst is not None
            out.append(self._drop(worst.key))
            freed += worst.blocks
        return out

    @property
    def share(self) -> float:
        """The share of the cache held now."""
        return self.pinned / self.capacity if self.capacity else 0.0

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, key: object) -> bool:
        return key in self._held
