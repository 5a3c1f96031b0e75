"""Which engine a call goes to when several serve the same model, in the simulator.

A balancer is pure, like a policy: it sees each engine's load as the engines report it (queued
and running requests, KV usage) and the call's program and prompt length, and names an engine
by index. Built-ins:

- ``round-robin``: engines in turn, blind to load.
- ``least-loaded``: fewest requests in the engine (running + waiting), then least KV in use.
- ``autellix``: the paper's rule. A call of at most ``threshold`` prompt tokens (2048) goes to
  the least-loaded engine: short prompts find their shared system-prompt prefix cached almost
  anywhere. A longer call goes to the engine its program used before, for its own KV cache,
  whose hit rate within a program stays high at every length; a program with no engine yet
  gets the least-loaded one, recorded.

Plug-ins load by ``package.module:Class`` (constructed with no arguments) and must have
``choose`` and ``forget``.
"""

from __future__ import annotations

import types
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from proxy.errors import ConfigError
from proxy.plugins import import_class

AUTELLIX_THRESHOLD = 2048


class EngineLoad(Protocol):
    """What a balancer may read of an engine (``EngineModel`` has all of it)."""

    @property
    def num_running(self) -> int: ...

    @property
    def num_waiting(self) -> int: ...

    @property
    def kv_usage(self) -> float: ...


@runtime_checkable
class Balancer(Protocol):
    def choose(
        self, *, program: str, prompt_tokens: int, engines: Sequence[EngineLoad], now: float
    ) -> int:
        """Index into ``engines`` of the engine for this call."""
        ...

    def forget(self, program: str) -> None:
        """The program has ended: drop anything remembered about it."""
        ...


def least_loaded(engines: Sequence[EngineLoad]) -> int:
    best, best_key = 0, (0, 0.0)
    for i, engine in enumerate(engines):
        key = (engine.num_running + engine.num_waiting, engine.kv_usage)
        if i == 0 or key < best_key:
            best, best_key = i, key
    return best


class LeastLoaded:
    name = "least-loaded"

    def choose(
        self, *, program: str, prompt_tokens: int, engines: Sequence[EngineLoad], now: float
    ) -> int:
        return least_loaded(engines)

    def forget(self, program: str) -> None:
        pass


class RoundRobin:
    name = "round-robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(
        self, *, program: str, prompt_tokens: int, engines: Sequence[EngineLoad], now: float
    ) -> int:
        index = self._next % len(engines)
        self._next = index + 1
        return index

    def forget(self, program: str) -> None:
        pass


class AutellixBalancer:
    name = "autellix"

    def __init__(self, threshold: int = AUTELLIX_THRESHOLD) -> None:
        self.threshold = threshold
        self._sticky: dict[str, int] = {}

    def choose(
        self, *, program: str, prompt_tokens: int, engines: Sequence[EngineLoad], now: float
    ) -> int:
        if len(engines) == 1:
            return 0
        if prompt_tokens <= self.threshold:
            return least_loaded(engines)
        index = self._sticky.get(program)
        if index is None or index >= len(engines):
            index = self._sticky[program] = least_loaded(engines)
        return index

    def forget(self, program: str) -> None:
        self._sticky.pop(program, None)


BUILTIN: Mapping[str, type[LeastLoaded] | type[RoundRobin] | type[AutellixBalancer]] = (
    types.MappingProxyType(
        {"least-loaded": LeastLoaded, "round-robin": RoundRobin, "autellix": AutellixBalancer}
    )
)


def make_balancer(ref: str) -> Balancer:
    """A built-in balancer by name, or a plug-in by ``package.module:Class``."""
    if ref in BUILTIN:
        return BUILTIN[ref]()
    if ":" not in ref:
        raise ConfigError(
            f"unknown balancer {ref!r}; known: {', '.join(BUILTIN)} or package.module:Class"
        )
    cls = import_class(ref, "balancer")
    try:
        balancer = cls()
    except Exception as exc:
        raise ConfigError(
            f"balancer {ref!r} cannot be constructed with no arguments: {exc}"
        ) from exc
    if not isinstance(balancer, Balancer):
        missing = [m for m in ("choose", "forget") if not callable(getattr(balancer, m, None))]
        raise ConfigError(
            f"balancer {ref!r} does not implement the Balancer contract; missing: {missing}"
        )
    return balancer
