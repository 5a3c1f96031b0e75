"""PLAS, Program-Level Attained Service (Autellix, single-threaded programs).

A call ranks by what its program consumed before it arrived plus what it consumed itself, in
multi-level queues: a new call enters the queue matching its program's service (not the top, as
MLFQ would put it), drops a queue each time its program-plus-own service crosses a boundary,
runs FCFS inside its queue, and jumps to the top when it starves (W / T >= beta).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from proxy.policies.base import BasePolicy, Priority, assigned
from proxy.policies.levels import Levels, LevelsConfig, StarvationGuard
from proxy.policies.tenant import TenantFloor, TenantFloorConfig
from proxy.records import Call, Program


@dataclass(frozen=True, slots=True)
class PLASConfig(LevelsConfig):
    """The multi-level queue settings, plus the optional tenant floor (None: off)."""

    tenant_floor: TenantFloorConfig | None = None


class PLAS(BasePolicy):
    """Program-level attained service over multi-level queues.

    ``call.start_service`` is the program's service when the call arrived; on finish the
    program's service becomes ``max(program.service, call.start_service + call.service)``,
    which for a single-threaded program is the sum of its calls' service. Programs with
    parallel calls belong to ATLAS: here their calls would be keyed by their own arrival, so
    siblings could be split by other programs' calls.
    """

    name: ClassVar[str] = "plas"
    Config: ClassVar[type] = PLASConfig

    def __init__(self, config: PLASConfig | None = None) -> None:
        self.config = config or PLASConfig()
        self.levels = Levels.from_config(self.config)
        self.guard = StarvationGuard(self.config.beta)
        floor = self.config.tenant_floor
        self.floor = TenantFloor(floor) if floor is not None else None
        # A waiting call's rank reads its program's records (its wait; under ATLAS its
        # siblings' progress). With a tenant floor it also reads its tenant's ledger, which
        # moves only when a call of the tenant arrives, is served or finishes (the mechanism
        # reports each: ``RankedQueue.entry`` and ``touch``). Time alone moves it only through
        # the idle decay, and a tenant with a call waiting is not idle (the call is in flight):
        # so the scope is the tenant, and ``stable_until`` holds as without a floor.
        self.rank_scope = "program" if self.floor is None else "tenant"

    def _program_service(self, call: Call, program: Program, now: float) -> float:
        if self.floor is None:
            return call.start_service
        return max(call.start_service, self.floor.floor(program.tenant, now))

    def _program_wait(self, program: Program, now: float) -> float:
        if self.floor is None:
            return program.wait
        return max(program.wait, self.floor.wait_floor(program.tenant, now))

    def on_arrival(self, *, call: Call, program: Program, now: float) -> Priority:
        call.start_service = program.service
        if self.floor is not None:
            self.floor.arrive(program.tenant, now)
        return self.priority(call=call, program=program, now=now)

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        base = self._program_service(call, program, now)
        since = self.guard.service_since_promotion(
            call,
            program_wait=self._program_wait(program, now),
            program_service=base,
            now=now,
        )
        service = base + call.service if since is None else since
        key = (
            call.arrival
            if self.floor is None
            else self.floor.key(program.tenant, now, call.arrival)
        )
        return assigned(call, Priority(self.levels.level_of(service), key))

    def on_service(self, *, call: Call, program: Program, now: float) -> Priority:
        if self.floor is not None:
            self.floor.serving(program.tenant, call.id, call.service)
        return self.priority(call=call, program=program, now=now)

    def service_slack(self, *, call: Call, program: Program, now: float) -> float:
        # While a call runs, its wait is still and its service only grows, so its W / T only
        # falls: no new promotion, and its level moves only when its service crosses the
        # boundary. A tenant floor moves with other programs' tokens: then report all.
        if self.floor is not None:
            return 0.0
        since = self.guard.since_promotion(call)
        service = call.start_service + call.service if since is None else since
        return self.levels.until_demotion(service)

    def stable_until(self, *, call: Call, program: Program, now: float) -> float:
        if self.guard.settled(call):
            return math.inf
        return self.guard.deadline(
            call,
            program_wait=self._program_wait(program, now),
            program_service=self._program_service(call, program, now),
            now=now,
        )

    def on_finish(self, *, call: Call, program: Program, now: float) -> None:
        before = program.service
        program.service = max(before, call.start_service + call.service)
        if self.floor is not None:
            self.floor.finish(
                program.tenant,
                service=program.service - before,
                wait=call.wait,
                now=now,
                call_id=call.id,
            )
        self.guard.forget(call.id)
