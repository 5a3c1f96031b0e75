"""A policy for end-to-end tests: a program named ``lvlN-...`` runs at level N, so tests can
set priorities from the client. Loaded by path, through the registry, like any plug-in."""

from __future__ import annotations

from proxy.policies.base import Priority
from proxy.records import Call, Program


class ProgramNamedLevel:
    name = "program-named-level"
    live_ok = True

    def _level(self, program: Program) -> int:
        tail = program.id.rsplit("/", 1)[-1]
        if tail.startswith("lvl") and tail[3:4].isdigit():
            return int(tail[3])
        return 0

    def on_arrival(self, *, call: Call, program: Program, now: float) -> Priority:
        return self.priority(call=call, program=program, now=now)

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        call.level = self._level(program)
        return Priority(call.level, call.arrival)

    def on_service(self, *, call: Call, program: Program, now: float) -> Priority:
        return self.priority(call=call, program=program, now=now)

    def on_finish(self, *, call: Call, program: Program, now: float) -> None:
        program.service += call.service
