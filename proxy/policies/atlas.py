"""ATLAS, Adaptive Thread-Level Attained Service (Autellix, programs with parallel calls).

A program's scalar is the longest critical path observed so far (not the sum of its calls'
service, which would punish a program for fanning out). Every new call starts at it and it is
raised when a call finishes on a longer path. All of a program's active calls share one
priority, so siblings are served together and no straggler holds up the join.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from proxy.policies.base import BasePolicy, Priority, RanksBy, assigned
from proxy.policies.levels import Levels, LevelsConfig, StarvationGuard
from proxy.policies.tenant import TenantFloor, TenantFloorConfig
from proxy.records import Call, Program


@dataclass(frozen=True, slots=True)
class ATLASConfig(LevelsConfig):
    """The multi-level queue settings, plus the optional tenant floor (None: off)."""

    tenant_floor: TenantFloorConfig | None = None


class ATLAS(BasePolicy):
    """Critical-path priority over multi-level queues, one priority per program.

    The level comes from the program's *live* critical path: the longest of the recorded path
    (``program.critical_path``) and ``start_service + service`` of each active call. It is the
    same for every active call of the program and only grows, so siblings share it while they
    run and the program sinks as its longest thread progresses. Inside a level, programs go in
    their order (``program.created``); ``group`` keeps one program's calls adjacent.

    On finish ``program.critical_path = max(critical_path, start_service + service)``; ATLAS
    also adds the call's service to ``program.service`` (the table's cumulative service).
    A starving call is promoted alone: anti-starvation is the one thing that splits siblings.
    """

    name: ClassVar[str] = "atlas"
    Config: ClassVar[type] = ATLASConfig
    ranks_by: ClassVar[RanksBy] = "critical_path"

    def __init__(self, config: ATLASConfig | None = None) -> None:
        self.config = config or ATLASConfig()
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

    def _floor(self, program: Program, now: float) -> float:
        return 0.0 if self.floor is None else self.floor.floor(program.tenant, now)

    def _program_wait(self, program: Program, now: float) -> float:
        if self.floor is None:
            return program.wait
        return max(program.wait, self.floor.wait_floor(program.tenant, now))

    @staticmethod
    def live_path(call: Call, program: Program, floor: float = 0.0) -> float:
        """The program's critical path including its active calls' progress; ``floor`` (the
        tenant floor) raises the path every call starts from, not the progress made on it."""
        path = max(program.critical_path, floor, max(call.start_service, floor) + call.service)
        for active in program.active.values():
            path = max(path, max(active.start_service, floor) + active.service)
        return path

    def on_arrival(self, *, call: Call, program: Program, now: float) -> Priority:
        call.start_service = program.critical_path
        if self.floor is not None:
            self.floor.arrive(program.tenant, now)
        return self.priority(call=call, program=program, now=now)

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        floor = self._floor(program, now)
        since = self.guard.service_since_promotion(
            call,
            program_wait=self._program_wait(program, now),
            program_service=max(program.critical_path, floor),
            now=now,
        )
        path = self.live_path(call, program, floor) if since is None else since
        key = (
            program.created
            if self.floor is None
            else self.floor.key(program.tenant, now, program.created)
        )
        return assigned(call, Priority(self.levels.level_of(path), key, program.id))

    def on_service(self, *, call: Call, program: Program, now: float) -> Priority:
        if self.floor is not None:
            self.floor.serving(program.tenant, call.id, call.service)
        return self.priority(call=call, program=program, now=now)

    def stable_until(self, *, call: Call, program: Program, now: float) -> float:
        if self.guard.settled(call):
            return math.inf
        return self.guard.deadline(
            call,
            program_wait=self._program_wait(program, now),
            program_service=max(program.critical_path, self._floor(program, now)),
            now=now,
        )

    def on_finish(self, *, call: Call, program: Program, now: float) -> None:
        before = program.critical_path
        program.critical_path = max(before, call.start_service + call.service)
        program.service += call.service
        if self.floor is not None:
            self.floor.finish(
                program.tenant,
                service=program.critical_path - before,
                wait=call.wait,
                now=now,
                call_id=call.id,
            )
        self.guard.forget(call.id)
