"""SRPT: shortest remaining processing time first. Clairvoyant: it reads the call's true
remaining work, which only the simulator knows, so it is a yardstick for the gap the paper
leaves to SRPT, never a live policy (``live_ok = False``)."""

from __future__ import annotations

import math
from typing import ClassVar

from proxy.errors import ConfigError
from proxy.policies.base import BasePolicy, NoConfig, Priority, assigned
from proxy.records import Call, Program


class SRPT(BasePolicy):
    """The call with the least remaining work goes first (``call.oracle_remaining``, kept up to
    date by the simulator as the call is served)."""

    name: ClassVar[str] = "srpt"
    live_ok: ClassVar[bool] = False
    Config: ClassVar[type] = NoConfig
    rank_scope: ClassVar[str] = "call"

    def __init__(self, config: NoConfig | None = None) -> None:
        self.config = config or NoConfig()

    def stable_until(self, *, call: Call, program: Program, now: float) -> float:
        return math.inf  # a waiting call's rank never changes by itself

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        remaining = call.oracle_remaining
        if remaining is None:
            raise ConfigError(
                f"policy 'srpt' is clairvoyant and call {call.id!r} has no oracle_remaining: "
                "only the simulator knows a call's remaining work; use srpt there, not live"
            )
        return assigned(call, Priority(0, remaining))
