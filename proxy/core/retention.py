"""Which cached contexts an engine keeps: program-aware KV retention (issue 11).

Pure and synchronous like the rest of the core: no clock, ``now`` comes from the caller. The
simulator's engine model (``proxy.sim.simulator.prefix_cache``) and the vLLM plug-in
(``proxy.backends.vllm_plugin.retention``) read one ``RetentionConfig`` and share these rules:

- ``EvictionOrder``: which cached context goes first when the cache must make room. "lru" is
  the engines' own rule; "rank" evicts the contexts of the programs the policy ranks worst
  (highest level) first, least recently used among equals. Under a least-attained-service
  policy the worst-ranked program is served last, so its context is the one needed furthest in
  the future: rank order approximates Belady's rule where LRU ignores the order calls are
  served in. Under FCFS every level is 0 and "rank" is LRU.
- ``GapLearner``: the time a finished call's context is held for its program's next call, from
  the program's own gaps between a call's finish and its next call (``learned_ttl``).
- ``Holds``: the held (pinned, not evictable) contexts, within ``max_pinned_share`` of the
  cache, released when the program's next call takes them, when their TTL passes, or when
  running calls need the memory (``shed``).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

EvictOrder = Literal["lru", "rank"]
K = TypeVar("K", bound=Hashable)

TTL_QUANTILE = 0.9
"""The quantile of a program's recent gaps its TTL is set to. A hold that ends just before the
next call wastes all the memory it pinned, so the TTL must cover most gaps; the last tenth are
the long tail (a user who went away, a slow tool) where a hold costs the most memory-time for
one hit."""
TTL_WINDOW = 16
"""Recent gaps kept per program: tools change as a program proceeds, so older gaps age out."""
TTL_MIN_OWN = 3
"""Gaps a program needs before its own quantile is trusted; until then the engine's pooled
gaps of all programs are its prior."""
TTL_POOL = 512
TTL_PRIOR_S = 2.0
"""The TTL before any gap was seen: a typical tool call or user turn (the simulator's tool
times have means of 0.25-1 s, whose 90th percentiles are 0.6-2.3 s)."""
TTL_MAX_S = 30.0
"""No hold outlasts this, whatever the gaps: a program that went away pins nothing for long,
and a longer pause costs more held memory-time than re-prefilling its context costs compute."""


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """evict: which cached blocks go first when the cache must make room: least recently used
        ("lru", the engines' own rule) or those of the programs the policy ranks worst ("rank").
    ttl: how long a finished call's context is held for its program's next call: None (not
        held), "learned" (from the program's own gaps between calls, ``GapLearner``) or a fixed
        number of seconds.
    max_pinned_share: the most of the KV cache held contexts may pin at once (0..1).
    ttl_max_s: the cap on a learned TTL."""

    evict: EvictOrder = "lru"
    ttl: float | Literal["learned"] | None = None
    max_pinned_share: float = 0.25
    ttl_max_s: float = TTL_MAX_S

    def __post_init__(self) -> None:
        if self.evict not in ("lru", "rank"):
            raise ValueError(f"evict must be lru or rank, not {self.evict!r}")
        if isinstance(self.ttl, (int, float)) and (self.ttl != self.ttl or self.ttl < 0):
            raise ValueError("ttl must be a number of seconds >= 0, 'learned' or None")
        if isinstance(self.ttl, str) and self.ttl != "learned":
            raise ValueError(
                f"ttl must be a number of seconds, 'learned' or None, not {self.ttl!r}"
            )
        if not 0.0 <= self.max_pinned_share <= 1.0:
            raise ValueError("max_pinned_share must be within 0..1")
        if not self.ttl_max_s > 0:
            raise ValueError("ttl_max_s must be positive")

    @property
    def holds(self) -> bool:
        """Whether finished calls' contexts are held at all."""
        return self.ttl is not None and self.max_pinned_share > 0 and self.ttl != 0

    @property
    def active(self) -> bool:
        """Whether this differs from the engines' own behaviour (LRU, nothing held)."""
        return self.evict == "rank" or self.holds

    @classmethod
    def parse(cls, evict: str, ttl: str, share: float | None = None) -> RetentionConfig:
        """From text settings (flags, environment): ``ttl`` is "none", "learned" or seconds."""
        text = ttl.strip().lower()
        value: float | Literal["learned"] | None
        if text in ("", "none", "off"):
            value = None
        elif text == "learned":
            value = "learned"
        else:
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"ttl must be none, learned or seconds, not {ttl!r}") from None
        evict_order: EvictOrder = "rank" if evict.strip().lower() == "rank" else "lru"
        if evict.strip().lower() not in ("lru", "rank"):
            raise ValueError(f"evict must be lru or rank, not {evict!r}")
        if share is None:
            return cls(evict=evict_order, ttl=value)
        return cls(evict=evict_order, ttl=value, max_pinned_share=share)


def quantile(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile by linear interpolation between order statistics (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("quantile of no values")
    at = q * (len(ordered) - 1)
    lo = int(at)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (at - lo)


class GapLearner:
    """Per program, the gaps between a call's finish and the program's next call, and the TTL
    they give (module docstring). Gaps are measured from the program's latest finish to its
    next arrival, so a program with parallel calls measures the pause after its last one."""

    def __init__(self, config: RetentionConfig) -> None:
        self.config = config
        self._last_finish: dict[str, float] = {}
        self._gaps: dict[str, deque[float]] = {}
        self._pool: deque[float] = deque(maxlen=TTL_POOL)

    def finished(self, program: str, now: float) -> None:
        self._last_finish[program] = now

    def arrived(self, program: str, now: float) -> float | None:
        """A call of ``program`` arrived: the gap it closes, if a call of it finished before."""
        last = self._last_finish.pop(program, None)
        if last is None:
            return None
        gap = max(0.0, now - last)
        own = self._gaps.get(program)
        if own is None:
            own = self._gaps[program] = deque(maxlen=TTL_WINDOW)
        own.append(gap)
        self._pool.append(gap)
        return gap

    def ttl(self, program: str) -> float | None:
        """How long ``program``'s latest context should be held (None: not at all)."""
        ttl = self.config.ttl
        if ttl is None:
            return None
        if ttl != "learned":
            return float(ttl)
        return min(self.learned_ttl(program), self.config.ttl_max_s)

    def learned_ttl(self, program: str) -> float:
        own = self._gaps.get(program)
        if own is not None and len(own) >= TTL_MIN_OWN:
            return quantile(own, TTL_QUANTILE)
        if len(self._pool) >= TTL_MIN_OWN:
            return quantile(self._pool, TTL_QUANTILE)
        return TTL_PRIOR_S

    def forget(self, program: str) -> None:
        self._last_finish.pop(program, None)
        self._gaps.pop(program, None)

    def __len__(self) -> int:
        return len(self._gaps)


class EvictionOrder(Generic[K]):
    """Evictable cached contexts and the order they go in (module docstring). Each entry is a
    key, the program it belongs to, its size in blocks and its level (the policy's level of
    the program's latest call; larger is worse). Under "lru" levels are ignored."""

    def __init__(self, evict: EvictOrder) -> None:
        self.by_rank = evict == "rank"
        self._levels: dict[int, OrderedDict[K, int]] = {}
        self._where: dict[K, tuple[int, str]] = {}
        self._programs: dict[str, set[K]] = {}
        self._used: dict[K, int] = {}  # when each entry was last used, in puts and touches
        self._clock = 0
        self.blocks = 0

    def put(self, key: K, program: str, blocks: int, level: int) -> None:
        """Add (or replace) an entry, most recently used within its level."""
        self.remove(key)
        level = level if self.by_rank else 0
        self._levels.setdefault(level, OrderedDict())[key] = blocks
        self._where[key] = (level, program)
        self._programs.setdefault(program, set()).add(key)
        self._clock += 1
        self._used[key] = self._clock
        self.blocks += blocks

    def touch(self, key: K) -> None:
        """The entry was used: most recently used within its level."""
        where = self._where.get(key)
        if where is not None:
            self._levels[where[0]].move_to_end(key)
            self._clock += 1
            self._used[key] = self._clock

    def get(self, key: K) -> int | None:
        where = self._where.get(key)
        return None if where is None else self._levels[where[0]][key]

    def set_level(self, program: str, level: int) -> None:
        """The program's rank changed (its next call arrived, ranked anew)."""
        if not self.by_rank:
            return
        # In their order of use, so they keep their LRU order among themselves.
        for key in sorted(self._programs.get(program, ()), key=self._used.__getitem__):
            old, _ = self._where[key]
            if old != level:
                blocks = self._levels[old].pop(key)
                if not self._levels[old]:
                    del self._levels[old]
                self._levels.setdefault(level, OrderedDict())[key] = blocks
                self._where[key] = (level, program)

    def remove(self, key: K) -> int:
        """Drop an entry (used up, or held again); its blocks, 0 if it was not here."""
        where = self._where.pop(key, None)
        if where is None:
            return 0
        level, program = where
        entries = self._levels[level]
        blocks = entries.pop(key)
        del self._used[key]
        if not entries:
            del self._levels[level]
        keys = self._programs[program]
        keys.discard(key)
        if not keys:
            del self._programs[program]
        self.blocks -= blocks
        return blocks

    def victim(self) -> K | None:
        """The entry to evict next: the worst level's least recently used."""
        if not self._levels:
            return None
        return next(iter(self._levels[max(self._levels)]))

    def evict(self) -> tuple[K, int] | None:
        key = self.victim()
        if key is None:
            return None
        return key, self.remove(key)

    def order(self) -> list[K]:
        """Every entry, first to be evicted first."""
        return [k for level in sorted(self._levels, reverse=True) for k in self._levels[level]]

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where


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
