"""The Balancer contract: which engine a call goes to, among the engines that can take it.

A balancer is pure, like a policy: no awaits, no clock reads, no network. It gets the call as
a ``Route``, one ``EngineLoad`` per candidate engine and ``now``, all by keyword (so the
contract can grow), and returns a ``Decision``. The same objects run in the live proxy (the
gate asks once per call, among the engines with room) and in the simulator.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol, runtime_checkable

from proxy.kvhints.load import EngineLoad

# The paper's threshold: prompts up to this many tokens go to the least-loaded engine.
AUTELLIX_THRESHOLD = 2048


@dataclass(frozen=True, slots=True)
class Route:
    """A call as a balancer sees it. ``affinity``: the engine its program's KV lives on
    (``Program.engine`` in the process table; None for a new program). ``blocks``: how many
    whole KV blocks its prompt fills (the most any engine can have cached of it)."""

    program: str
    prompt_tokens: int
    affinity: str | None = None
    blocks: int = 0


class Decision(NamedTuple):
    """``choice``: index into the candidate engines. ``moved_from``: the program's affined engine,
    when the call left it (it was not a candidate, or it was loaded past the guard); the
    proxy counts such moves. ``reason``: why this engine, a short label for metrics."""

    choice: int
    moved_from: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Tuning:
    """The built-in balancers' settings (``routing`` in the config).

    ``threshold``: prompts of at most this many tokens go to the least-loaded engine.
    ``guard_factor``, ``guard_slack``: an engine is overloaded for a call that prefers it
    (affinity, prefix) when it holds more than ``guard_factor`` x the least-loaded engine's
    requests plus ``guard_slack``; the call then goes to the least-loaded one.
    ``min_match_blocks``: a prefix match counts only if the preferred engine holds at least
    this many more of the prompt's blocks than the least-loaded engine, so that a system
    prompt every engine holds does not steer calls."""

    threshold: int = AUTELLIX_THRESHOLD
    guard_factor: float = 2.0
    guard_slack: int = 4
    min_match_blocks: int = 16

    def overloaded(self, engine: EngineLoad, lightest: EngineLoad) -> bool:
        return engine.queued > self.guard_factor * lightest.queued + self.guard_slack


@runtime_checkable
class Balancer(Protocol):
    """Chooses an engine per call. ``name`` is the registry's name for it."""

    name: str

    def choose(self, *, call: Route, engines: Sequence[EngineLoad], now: float) -> Decision:
        """The engine for ``call`` among ``engines`` (never empty)."""
        ...

    def forget(self, *, program: str) -> None:
        """The program has ended: drop anything remembered about it."""
        ...


def least_loaded(engines: Sequence[EngineLoad]) -> int:
    """Fewest requests (running + waiting), then least KV in use, then the first."""
    best, best_key = 0, (0, 0.0)
    for i, engine in enumerate(engines):
        key = (engine.queued, engine.kv_usage or 0.0)
        if i == 0 or key < best_key:
            best, best_key = i, key
    return best


def find(engines: Sequence[EngineLoad], name: str) -> int | None:
    for i, engine in enumerate(engines):
        if engine.name == name:
            return i
    return None
