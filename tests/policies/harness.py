"""A tiny deterministic scheduler for testing policies: unit-time slots, one server that serves
``capacity`` calls per slot (a batch), preemptive at slot boundaries, the policy deciding the
order. It drives a policy exactly as the contract says the mechanism does (``on_arrival``,
``priority`` every round, ``on_service`` after each slot of service, ``on_finish``) and keeps
the records' measurements (``wait``, ``queued_since``, ``service``, ``program.wait``,
``program.active``, ``oracle_remaining``) the way the proxy and the simulator must.

Workloads are lists of `CallSpec`: a call becomes ready at ``at`` or when all the calls it is
``after`` have finished (no think time), whichever is later. Ties between equal priorities go
to the call released first (release order follows the spec list at equal times).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from proxy.policies.base import Policy, Priority
from proxy.records import Call, CallState, Program


@dataclass(frozen=True, slots=True)
class CallSpec:
    id: str
    program: str
    work: int
    after: tuple[str, ...] = ()
    at: int = 0
    tenant: str = ""


def chain(program: str, works: Iterable[int], *, at: int = 0, tenant: str = "") -> list[CallSpec]:
    """A single-threaded program: each call arrives when the previous one finishes."""
    specs: list[CallSpec] = []
    for i, work in enumerate(works, start=1):
        after = (specs[-1].id,) if specs else ()
        specs.append(CallSpec(f"{program}{i}", program, work, after, at, tenant))
    return specs


@dataclass(slots=True)
class Trace:
    """What happened: the final records, and what ran and ranked how at each slot."""

    calls: dict[str, Call] = field(default_factory=dict)
    programs: dict[str, Program] = field(default_factory=dict)
    ran: list[tuple[str, ...]] = field(default_factory=list)  # slot t -> calls served in it
    # Every priority the policy gave each call, in time order: on_arrival, then each round's
    # priority() and each on_service (stamped with the slot boundary it was given at).
    ranks: dict[str, list[tuple[int, Priority]]] = field(default_factory=dict)
    seq: dict[str, int] = field(default_factory=dict)  # release order

    def finish(self, call_id: str) -> int:
        done = self.calls[call_id].finished_at
        assert done is not None, f"{call_id} never finished"
        return int(done)

    def total_wait(self, calls: Iterable[str] | None = None) -> int:
        ids = self.calls if calls is None else calls
        return int(sum(self.calls[c].wait for c in ids))

    def makespan(self, program: str | None = None) -> int:
        ids = [c.id for c in self.calls.values() if program is None or c.program_id == program]
        return max(self.finish(c) for c in ids)

    def gantt(self) -> str:
        """One line per call, '#' served, '.' waiting; for assertion messages."""
        width = len(self.ran)
        lines = []
        for call in self.calls.values():
            row = [" "] * width
            end = self.finish(call.id)
            for t in range(int(call.arrival), end):
                row[t] = "#" if call.id in self.ran[t] else "."
            lines.append(f"{call.id:>6} |{''.join(row)}|")
        return "\n".join(lines)


def run(
    policy: Policy,
    specs: Sequence[CallSpec],
    *,
    capacity: int = 1,
    created: Mapping[str, float] | None = None,
    horizon: int = 100_000,
) -> Trace:
    """Serve ``specs`` under ``policy`` until every call has finished."""
    trace = Trace()
    pending = list(specs)
    works = {s.id: s.work for s in specs}
    done: set[str] = set()
    t = 0
    while pending or any(c.state is not CallState.DONE for c in trace.calls.values()):
        assert t < horizon, "the schedule did not finish: a call is never served"
        still: list[CallSpec] = []
        for spec in pending:
            if spec.at <= t and all(p in done for p in spec.after):
                _release(policy, trace, spec, t, created)
            else:
                still.append(spec)
        pending = still
        ready = [c for c in trace.calls.values() if c.state is not CallState.DONE]
        ranks = {}
        for call in ready:
            program = trace.programs[call.program_id]
            ranks[call.id] = policy.priority(call=call, program=program, now=float(t))
            trace.ranks[call.id].append((t, ranks[call.id]))
        order = sorted(ready, key=lambda c: (ranks[c.id], trace.seq[c.id]))
        served = order[:capacity]
        for call in served:
            if call.queued_since is not None:
                call.wait += t - call.queued_since
                call.queued_since = None
            call.state = CallState.RUNNING
            call.started_at = t if call.started_at is None else call.started_at
        for call in order[capacity:]:
            if call.queued_since is None:  # preempted at this slot boundary
                call.queued_since = float(t)
                call.state = CallState.PREEMPTED
        trace.ran.append(tuple(c.id for c in served))
        t += 1
        for call in served:
            program = trace.programs[call.program_id]
            call.service += 1
            call.oracle_remaining = float(works[call.id]) - call.service
            rank = policy.on_service(call=call, program=program, now=float(t))
            trace.ranks[call.id].append((t, rank))
            if call.service >= works[call.id]:
                call.state = CallState.DONE
                call.finished_at = t
                program.wait += call.wait
                program.last_completion = t
                policy.on_finish(call=call, program=program, now=float(t))
                del program.active[call.id]
                done.add(call.id)
    return trace


def _release(
    policy: Policy, trace: Trace, spec: CallSpec, t: int, created: Mapping[str, float] | None
) -> None:
    program = trace.programs.get(spec.program)
    if program is None:
        when = created.get(spec.program, float(t)) if created else float(t)
        program = trace.programs[spec.program] = Program(spec.program, when, tenant=spec.tenant)
    call = Call(
        spec.id,
        spec.program,
        float(t),
        parents=spec.after,
        queued_since=float(t),
        oracle_remaining=float(spec.work),
    )
    trace.calls[spec.id] = call
    trace.seq[spec.id] = len(trace.seq)
    program.active[call.id] = call
    program.calls += 1
    program.last_arrival = t
    trace.ranks[spec.id] = [(t, policy.on_arrival(call=call, program=program, now=float(t)))]
