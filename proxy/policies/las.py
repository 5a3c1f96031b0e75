"""LAS: least attained service per call, continuous (no levels, no program context).

The yardstick that shows why Autellix discretizes: calls with similar service keep overtaking
each other, which on an engine means a preemption per overtaking (AUTELLIX.md).
"""

from __future__ import annotations

import math
from typing import ClassVar

from proxy.policies.base import BasePolicy, NoConfig, Priority, assigned
from proxy.records import Call, Program


class LAS(BasePolicy):
    """The call with the least service so far goes first; ties go in arrival order."""

    name: ClassVar[str] = "las"
    Config: ClassVar[type] = NoConfig
    rank_scope: ClassVar[str] = "call"

    def __init__(self, config: NoConfig | None = None) -> None:
        self.config = config or NoConfig()

    def stable_until(self, *, call: Call, program: Program, now: float) -> float:
        return math.inf  # a waiting call's rank never changes by itself

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        return assigned(call, Priority(0, call.service))
