"""llm-d's turn-number priority with ageing, as a baseline (``turn-priority``).

What llm-d does (llm-d/llm-d-router pull request 2116, ``pkg/epp/framework/plugins/flowcontrol/
fairness/program-aware/strategy_turnpriority.go``): the router's flow-control layer keeps one
queue per session and dispatches, whenever the pool is not saturated, the head of the queue
with the highest ``turn_number + turnPriorityTimeWeight x head_wait_seconds``. The turn number
is the session's dispatched requests plus one, so deeper sessions (whose prefix is most likely
still cached, and which are closer to done) go first, and the wait term lets a shallow session
overtake once it has waited long enough. A session idle (nothing in flight) for more than
``turnPriorityInactivitySeconds`` since its last completion counts as turn one again. Defaults:
weight 0.05 per second, inactivity 120 s. Nothing running is preempted.

Here: one level (so the preemption rule never fires), key ``weight x arrival - turn`` (smaller
first). Every waiting call's wait grows at the same rate, so ordering by ``turn + weight x
(now - arrival)`` is the same at every ``now`` as ordering by that key: a waiting call's rank
changes only when its program's calls are dispatched or finish.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from proxy.policies.base import BasePolicy, Priority, assigned
from proxy.records import Call, Program


@dataclass(frozen=True, slots=True)
class TurnPriorityConfig:
    """llm-d's defaults: ``turnPriorityTimeWeight`` 0.05 (turns per second of wait) and
    ``turnPriorityInactivitySeconds`` 120 (0: never reset)."""

    time_weight: float = 0.05
    inactivity_s: float = 120.0

    def __post_init__(self) -> None:
        if self.time_weight < 0 or self.inactivity_s < 0:
            raise ValueError("time_weight and inactivity_s must not be negative")


class TurnPriority(BasePolicy):
    """Deepest session first, aged by waiting time, never preemptive."""

    name: ClassVar[str] = "turn-priority"
    Config: ClassVar[type] = TurnPriorityConfig
    rank_scope: ClassVar[str] = "program"

    def __init__(self, config: TurnPriorityConfig | None = None) -> None:
        self.config = config or TurnPriorityConfig()

    def stable_until(self, *, call: Call, program: Program, now: float) -> float:
        return math.inf  # the key is time-invariant (module docstring)

    def turn(self, call: Call, program: Program) -> int:
        """The call's turn number: its program's calls already dispatched, plus one; one again
        after an idle gap longer than ``inactivity_s``."""
        others = [c for c in program.active.values() if c is not call]
        in_flight = sum(1 for c in others if c.started_at is not None)
        limit = self.config.inactivity_s
        last = program.last_completion
        if limit > 0 and in_flight == 0 and last is not None and call.arrival - last > limit:
            return 1
        finished = max(0, program.calls - len(program.active))
        return finished + in_flight + 1

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        key = self.config.time_weight * call.arrival - self.turn(call, program)
        return assigned(call, Priority(0, key))
