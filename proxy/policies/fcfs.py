"""FCFS: calls in arrival order, never preempted for priority (vLLM's default; the baseline)."""

from __future__ import annotations

import math
from typing import ClassVar

from proxy.policies.base import BasePolicy, NoConfig, Priority, assigned
from proxy.records import Call, Program


class FCFS(BasePolicy):
    """First come, first served: one level, ordered by the call's arrival."""

    name: ClassVar[str] = "fcfs"
    Config: ClassVar[type] = NoConfig
    rank_scope: ClassVar[str] = "call"
    # Admission order is arrival order: an admission cap has nothing to reorder (concurrency).
    arrival_order: ClassVar[bool] = True

    def __init__(self, config: NoConfig | None = None) -> None:
        self.config = config or NoConfig()

    def stable_until(self, *, call: Call, program: Program, now: float) -> float:
        return math.inf  # a waiting call's rank never changes by itself

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        return assigned(call, Priority(0, call.arrival))
