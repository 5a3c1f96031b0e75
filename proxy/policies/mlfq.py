"""MLFQ, FastServe-like: every call enters the top queue and is demoted by its own service.

Program-blind on purpose: it is the baseline that shows call-level preemption alone still
suffers program-level head-of-line blocking (paper, Fig. 2c): a long program's every new call
starts at the top again.
"""

from __future__ import annotations

from typing import ClassVar

from proxy.policies.base import BasePolicy, Priority, assigned
from proxy.policies.levels import Levels, LevelsConfig, StarvationGuard
from proxy.records import Call, Program


class MLFQ(BasePolicy):
    """Level from the call's own service; FCFS (by arrival) inside a level. Anti-starvation,
    when on, uses the call's own W and T (the policy knows nothing of programs)."""

    name: ClassVar[str] = "mlfq"
    Config: ClassVar[type] = LevelsConfig
    rank_scope: ClassVar[str] = "call"

    def __init__(self, config: LevelsConfig | None = None) -> None:
        self.config = config or LevelsConfig()
        self.levels = Levels.from_config(self.config)
        self.guard = StarvationGuard(self.config.beta)

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        since = self.guard.service_since_promotion(
            call, program_wait=0.0, program_service=0.0, now=now
        )
        service = call.service if since is None else since
        return assigned(call, Priority(self.levels.level_of(service), call.arrival))

    def stable_until(self, *, call: Call, program: Program, now: float) -> float:
        return self.guard.deadline(call, program_wait=0.0, program_service=0.0, now=now)

    def on_finish(self, *, call: Call, program: Program, now: float) -> None:
        super().on_finish(call=call, program=program, now=now)
        self.guard.forget(call.id)
