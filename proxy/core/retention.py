"""Which cached contexts an engine keeps: program-aware KV retention (issue 11).

Pure and synchronous like the rest of the core. ``RetentionConfig`` is the setting the
simulator's engine model and the vLLM plug-in read; the rules (eviction order by the policy's
rank, a per-program TTL learned from its own gaps between calls, the bound on pinned memory)
live here too, so both share one method.

Status: the configuration only; the rules are being built (see the issue).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EvictOrder = Literal["lru", "rank"]


@dataclass(frozen=True, slots=True)
class RetentionConfig:
    """evict: which cached blocks go first when the cache must make room: least recently used
        ("lru", the engines' own rule) or those of the programs the policy ranks worst ("rank").
    ttl: how long a finished call's context is held for its program's next call: None (not
        held), "learned" (from the program's own gaps between calls) or a fixed number of
        seconds.
    max_pinned_share: the most of the KV cache held contexts may pin at once (0..1)."""

    evict: EvictOrder = "lru"
    ttl: float | Literal["learned"] | None = None
    max_pinned_share: float = 0.25

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
