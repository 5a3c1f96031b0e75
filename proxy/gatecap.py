"""The live gate's admission cap: per engine, the core's ``CapController`` fed by what the
proxy sees of that engine, applied as ``EngineSlots.cap``.

What it reads, without per-chunk work of its own: the completion tokens of the calls it
granted there (the process table already counts them as the stream is relayed; a call's count
at its grant is kept, and at its release the difference is added to the engine's total),
the calls it holds there (exact: the gate granted them) and the calls waiting at the gate.
At most every ``SAMPLE_S`` (on a decision, never on a timer of its own) the tokens produced
since the last sample give the engine's tokens/s at the running count seen, and the
controller moves the cap (``proxy.core.concurrency``). Fixed mode is the configured k.

"auto" is resolved per engine (``for_policy``): the gate cannot see how an engine evicts its
prefix cache, so an engine declares it (``EngineConfig.kv_evict``). On an engine that evicts by
the policy's rank (the autellix vLLM plug-in with retention) plas is capped; on a stock engine
(LRU) it is not, because the calls the cap holds back would lose their cached contexts.
"""

from __future__ import annotations

from collections.abc import Iterable

from proxy.core.concurrency import CapConfig, CapController, for_policy

SAMPLE_S = 0.5
"""Seconds between samples: long enough to hold tens of decode steps, short enough for the
controller's 2 s interval to see several."""
DEFAULT_LIMIT = 256
"""An engine's own limit when its ``max_inflight`` is not set: vLLM's default max_num_seqs."""


class _Engine:
    __slots__ = ("controller", "done", "last_tokens")

    def __init__(self, controller: CapController) -> None:
        self.controller = controller
        self.done = 0  # tokens of calls released from this engine
        self.last_tokens = 0


class GateCaps:
    """The caps of the gate's engines (module docstring)."""

    def __init__(self, config: CapConfig, now: float, policy: object = None) -> None:
        """``config`` as set ("auto" allowed); ``policy`` resolves it per engine."""
        # The resolved setting on an engine that evicts by LRU, and on one that evicts by rank.
        self._by_eviction = (
            for_policy(config, policy, retains=False),
            for_policy(config, policy, retains=True),
        )
        self.config = self._by_eviction[0]
        self._engines: dict[str, _Engine] = {}
        self._last = now

    @property
    def on(self) -> bool:
        return any(c.mode != "off" for c in self._by_eviction)

    def cap(
        self, engine: str, max_inflight: int | None, now: float, *, retains: bool = False
    ) -> int | None:
        """The cap for ``engine`` now: its ``max_inflight`` and the controller's k, whichever
        is lower (None: neither). ``retains``: the engine evicts by the policy's rank."""
        state = self._engines.get(engine)
        if state is None:
            limit = max_inflight or DEFAULT_LIMIT
            config = self._by_eviction[retains]
            controller = CapController(config, limit=limit, now=now)
            state = self._engines[engine] = _Engine(controller)
        k = state.controller.k
        if k is None:
            return max_inflight
        return k if max_inflight is None else min(k, max_inflight)

    def released(self, engine: str, tokens: int) -> None:
        """A call left ``engine`` having produced ``tokens`` since its grant."""
        state = self._engines.get(engine)
        if state is not None:
            state.done += tokens

    def sample(self, now: float, engines: Iterable[tuple[str, int, int]], waiting: int) -> bool:
        """``engines``: (name, calls held, tokens those calls produced since their grants).
        ``waiting``: calls waiting at the gate. True when a sample was taken (the caller
        then reads the caps again)."""
        span = now - self._last
        if span < SAMPLE_S or all(c.mode != "adaptive" for c in self._by_eviction):
            return False
        self._last = now
        rows = list(engines)
        share = waiting / max(len(rows), 1)  # a waiting call may go to any engine
        for name, held, running_tokens in rows:
            state = self._engines.get(name)
            if state is None or not state.controller.adaptive:
                continue
            produced = state.done + running_tokens
            rate = (produced - state.last_tokens) / span
            state.last_tokens = produced
            controller = state.controller
            controller.observe_rate(held, rate, span, now)
            controller.observe_waiting(share, span)
            controller.update(now)
        return True
