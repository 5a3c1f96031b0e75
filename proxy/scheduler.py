"""The scheduling mechanism of the live proxy: it drives the process table and the policy
through the life of each call, with the wall clock as ``now``.

The policy decides (pure); this object measures and applies (DESIGN.md rule 1). The request
path records a call's life here (arrival, start, service, preemption, finish), in the table
first and then in the policy that reads what the table measured; the table applies a finish
through ``proxy.core.lifecycle``, as the simulator and the engine plug-in do. Ranking waiting
calls for a slot is the gate's scheduling core's (``proxy.core``), which asks the same policy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from proxy.intercept.identify import Identifier, Identity
from proxy.metrics import Metrics
from proxy.policies.base import Policy, Priority
from proxy.records import Call, Program
from proxy.table import ProcessTable
from proxy.trace import TraceRecorder


class Scheduler:
    def __init__(
        self,
        *,
        table: ProcessTable,
        policy: Policy,
        identifier: Identifier,
        metrics: Metrics,
        clock: Callable[[], float],
        on_program_update: Callable[[Program], None] | None = None,
        recorder: TraceRecorder | None = None,
    ) -> None:
        self.on_program_update = on_program_update
        self.recorder = recorder
        self.table = table
        self.policy = policy
        self.identifier = identifier
        self.metrics = metrics
        self.clock = clock
        self._slack: Callable[..., float] | None = getattr(policy, "service_slack", None)
        # Call id -> the call's service at which the policy must hear of it next (see
        # ``served``); only calls being streamed with a slack have one.
        self._report_at: dict[str, float] = {}

    def arrive(self, identity: Identity, *, prompt_tokens: int) -> tuple[Program, Call, Priority]:
        """A call entered the proxy: record it in its program and rank it."""
        now = self.clock()
        program, call = self.table.begin(
            identity.program_id,
            now=now,
            tenant=identity.tenant,
            source=identity.source,
            thread=identity.thread,
            parents=identity.parents,
            prompt_tokens=prompt_tokens,
            end=identity.end,
        )
        priority = self.policy.on_arrival(call=call, program=program, now=now)
        self.metrics.calls.labels(identity.source).inc()
        self.metrics.arrivals.labels(str(priority.level)).inc()
        return program, call, priority

    def started(self, call: Call, engine: str) -> None:
        self.table.start(call, engine, self.clock())

    def preempted(self, call: Call) -> None:
        self._forget_reports(call, None)
        self.table.preempt(call, self.clock())

    def served(self, call: Call, tokens: int) -> Priority | None:
        """``tokens`` more were generated: the call's service grows, and the policy may
        demote it mid-call (the new priority is returned)."""
        now = self.clock()
        self.table.tokens(call, tokens, now)
        report_at = self._report_at.get(call.id)
        if report_at is not None and call.service < report_at:
            return None  # the policy said its answer cannot change before then
        program = self.table.get(call.program_id)
        if program is None:
            return None
        before = call.level
        priority = self.policy.on_service(call=call, program=program, now=now)
        if priority.level > before:
            self.metrics.demotions.inc()
        if self._slack is not None:
            slack = self._slack(call=call, program=program, now=now)
            # A hair early rather than a chunk late, whatever the rounding of the boundary.
            self._report_at[call.id] = call.service + slack * (1 - 1e-9)
        return priority

    def _forget_reports(self, call: Call, program: Program | None) -> None:
        """The slack given for ``call`` (and, its program's records having changed, for its
        program's other running calls) no longer holds: they report at their next chunk."""
        report_at = self._report_at
        if not report_at:
            return
        report_at.pop(call.id, None)
        if program is not None:
            for sibling in program.active:
                report_at.pop(sibling, None)

    def finish(
        self,
        call: Call,
        identity: Identity,
        *,
        ok: bool,
        usage: tuple[int, int] | None,
        reply: dict[str, Any] | None,
        preemptions: int = 0,
    ) -> None:
        """The call ended. The table hands it to the policy's ``on_finish``; an answered chat
        call teaches program inference the reply its next call will carry."""
        prompt, completion = usage if usage is not None else (None, None)
        program = self.table.get(call.program_id)  # before finish: it may release the program
        self._forget_reports(call, program)
        now = self.clock()
        released = self.table.finish(
            call, now, ok=ok, prompt_tokens=prompt, completion_tokens=completion
        )
        if released and program is not None:
            self.metrics.program_ended(program)
        if program is not None and self.recorder is not None:
            self.recorder.record(call=call, program=program, now=now, preemptions=preemptions)
        if program is not None and self.on_program_update is not None and program.id in self.table:
            self.on_program_update(program)
        if ok and reply is not None and not identity.end:
            self.identifier.record_reply(identity, reply)
