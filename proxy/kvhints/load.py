"""An engine's load: the one type the pool reads from engines' metrics and every balancer
reads, live and in the simulator alike."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """Load of one engine; None where the engine does not say.

    ``running`` and ``waiting``: requests in the engine's batch and in its own queue;
    ``kv_usage``: the fraction of its KV cache in use (0..1). A balancer also sees the engine's
    ``name`` and ``cached``: how many blocks of the call's prompt prefix the engine holds, by
    the prefix index (0 where nothing is known)."""

    running: int | None = None
    waiting: int | None = None
    kv_usage: float | None = None
    name: str = ""
    cached: int = 0

    @property
    def queued(self) -> int:
        """Requests at the engine, running or waiting (unknown counts as none)."""
        return (self.running or 0) + (self.waiting or 0)
