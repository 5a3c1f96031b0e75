"""llm-d's program-aware least-attained-service order, as a baseline (``llmd-las``).

What llm-d does (llm-d/llm-d-router, ``pkg/epp/framework/plugins/flowcontrol/fairness/
program-aware``: ``strategy_las.go`` and its README): the router's flow-control layer keeps one
queue per program (the fairness id header) and, whenever the pool is not saturated, dispatches
the head of the queue whose program has the least *attained service*: the weighted tokens its
finished requests consumed (input x 1, output x 2), decayed in wall-clock time with a 60 s
half-life. The score is ``0.8 x (1 - normalised service) + 0.2 x normalised head wait``,
normalised over the queues waiting at that moment. Service is added only when a response
completes; nothing running is ever preempted (the engine behind it runs its own order).

Here: every call ranks at one level (so the preemption rule never fires: margin 1) by its
program's decayed service, smallest first; calls of equal service (new programs) go in arrival
order, which is what the head-wait term decides between them. The per-moment min-max
normalisation of the two terms cannot be expressed as a per-call key, so the head-wait term
breaks ties only (documented in docs/policies.md).

The decayed service ``S(now) = S(t0) * 2 ** -((now - t0) / half_life)`` orders programs the
same at every ``now`` as the key ``log2(S(t0)) + t0 / half_life``, so a waiting call's rank
never changes with time alone, only when its program finishes a call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from proxy.policies.base import BasePolicy, Priority, assigned
from proxy.records import Call, Program


@dataclass(frozen=True, slots=True)
class LLMDLASConfig:
    """llm-d's defaults: ``lasHalfLifeSeconds`` 60, input and output token weights 1 and 2,
    ``evictionTtlSeconds`` 3600 (a program idle that long is forgotten)."""

    half_life_s: float = 60.0
    input_weight: float = 1.0
    output_weight: float = 2.0
    forget_after_s: float = 3600.0

    def __post_init__(self) -> None:
        if self.half_life_s < 0 or self.input_weight < 0 or self.output_weight < 0:
            raise ValueError("half_life_s and the token weights must not be negative")
        if self.forget_after_s <= 0:
            raise ValueError("forget_after_s must be positive")


class LLMDLAS(BasePolicy):
    """Least decayed attained service per program, in the router's queue, never preemptive.

    ``program.service`` holds the program's weighted tokens as of its last finished call, whose
    time the policy remembers (``anchor``) to decay it from."""

    name: ClassVar[str] = "llmd-las"
    Config: ClassVar[type] = LLMDLASConfig
    rank_scope: ClassVar[str] = "program"

    def __init__(self, config: LLMDLASConfig | None = None) -> None:
        self.config = config or LLMDLASConfig()
        self._anchor: dict[str, float] = {}
        self._finishes = 0

    def on_arrival(self, *, call: Call, program: Program, now: float) -> Priority:
        return self.priority(call=call, program=program, now=now)

    def stable_until(self, *, call: Call, program: Program, now: float) -> float:
        return math.inf  # the key is time-invariant (module docstring)

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        return assigned(call, Priority(0, self.key(program)))

    def key(self, program: Program) -> float:
        """The program's order: log2 of its service, referred to a common time (-inf: none)."""
        service = program.service
        if service <= 0.0:
            return -math.inf
        anchor = self._anchor.get(program.id, 0.0)
        half_life = self.config.half_life_s
        return math.log2(service) + (anchor / half_life if half_life > 0 else 0.0)

    def decayed(self, program: Program, now: float) -> float:
        """The program's attained service at ``now``."""
        anchor = self._anchor.get(program.id)
        half_life = self.config.half_life_s
        if anchor is None or half_life <= 0:
            return program.service
        return program.service * math.pow(2.0, -(now - anchor) / half_life)

    def on_finish(self, *, call: Call, program: Program, now: float) -> None:
        cost = (
            self.config.input_weight * call.prompt_tokens
            + self.config.output_weight * call.completion_tokens
        )
        program.service = self.decayed(program, now) + cost
        self._anchor[program.id] = now
        self._finishes += 1
        if self._finishes % 1024 == 0:
            self._forget(now)

    def _forget(self, now: float) -> None:
        # llm-d's eviction sweep: a program idle past the TTL starts again from nothing.
        horizon = now - self.config.forget_after_s
        for pid in [p for p, t in self._anchor.items() if t < horizon]:
            del self._anchor[pid]
