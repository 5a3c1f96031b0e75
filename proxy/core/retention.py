"""Which cached contexts an engine keeps: program-aware KV retention (issue 11).

Pure and synchronous like the rest of the core: no clock, ``now`` comes from the caller. The
simulator's engine model (``proxy.sim.simulator.prefix_cache``) and the vLLM plug-in
(``proxy.backends.vllm_plugin.retention``) read one ``RetentionConfig`` and share these rules
(the last two in ``proxy.core.kvcache``):

- ``EvictionOrder``: which cached context goes first when the cache must make room. "lru" is
  the engines' own rule; "rank" evicts first the contexts no waiting call needs, then those of
  the waiting calls the policy ranks worst (class docstring): the context needed furthest in
  the future goes first, as far as the queue tells.
- ``GapLearner``: the time a finished call's context is held for its program's next call, from
  the program's own gaps between a call's finish and its next call (``learned_ttl``).
- ``Holds``: the held (pinned, not evictable) contexts, within ``max_pinned_share`` of the
  cache, released when the program's next call takes them, when their TTL passes, or when
  running calls need the memory (``shed``).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

EvictOrder = Literal["lru", "rank"]

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
TTL_PROGRAMS = 4096
"""Programs whose gaps are remembered (least recently active forgotten first): a long-running
engine sees programs come and go, and a forgotten one starts again from the pooled prior."""
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
        order = evict.strip().lower()
        if order not in ("lru", "rank"):
            raise ValueError(f"evict must be lru or rank, not {evict!r}")
        evict_order: EvictOrder = "rank" if order == "rank" else "lru"
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
        self._last_finish: OrderedDict[str, float] = OrderedDict()
        self._gaps: OrderedDict[str, deque[float]] = OrderedDict()
        self._pool: deque[float] = deque(maxlen=TTL_POOL)

    def finished(self, program: str, now: float) -> None:
        self._last_finish[program] = now
        self._last_finish.move_to_end(program)
        if len(self._last_finish) > TTL_PROGRAMS:
            self._last_finish.popitem(last=False)

    def arrived(self, program: str, now: float) -> float | None:
        """A call of ``program`` arrived: the gap it closes, if a call of it finished before."""
        last = self._last_finish.pop(program, None)
        if last is None:
            return None
        gap = max(0.0, now - last)
        own = self._gaps.get(program)
        if own is None:
            own = self._gaps[program] = deque(maxlen=TTL_WINDOW)
            if len(self._gaps) > TTL_PROGRAMS:
                self._gaps.popitem(last=False)
        self._gaps.move_to_end(program)
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
