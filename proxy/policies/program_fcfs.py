"""Program-level FCFS (``program-fcfs``): every call of a program ranks by the time its
program arrived, so an earlier program's calls go before a later program's, whatever they have
consumed. The scheduling half of Continuum (arXiv 2511.02230), whose other half, holding a
program's KV cache across tool calls for a time to live, is the engine's retention setting
(``proxy.core.retention``; the ``continuum`` curve of ``autellix bench`` sets both)."""

from __future__ import annotations

import math
from typing import ClassVar

from proxy.policies.base import BasePolicy, NoConfig, Priority, assigned
from proxy.records import Call, Program


class ProgramFCFS(BasePolicy):
    """One level, ordered by the program's arrival (``program.created``), then the call's."""

    name: ClassVar[str] = "program-fcfs"
    Config: ClassVar[type] = NoConfig
    rank_scope: ClassVar[str] = "call"

    def __init__(self, config: NoConfig | None = None) -> None:
        self.config = config or NoConfig()

    def stable_until(self, *, call: Call, program: Program, now: float) -> float:
        return math.inf  # a program's arrival never changes

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        return assigned(call, Priority(0, program.created))
