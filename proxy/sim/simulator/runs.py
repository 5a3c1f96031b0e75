"""The pure steps between the simulator's records (``bookkeeping.py``) and the rest: a
program's record when it arrives, the request a preempted call is resubmitted as, and the
results a finished call and program leave. The loop (``des.py``) calls them."""

from __future__ import annotations

from proxy.records import Call, Program
from proxy.sim.engine.engine import EngineRequest
from proxy.sim.simulator.bookkeeping import CallRun, ProgramRun
from proxy.sim.simulator.results import CallResult, ProgramResult
from proxy.sim.simulator.workloads import ProgramSpec


def program_run(spec: ProgramSpec, now: float, future: float) -> ProgramRun:
    """A program's record on arrival: every call waits on all its parents; ``future`` is the
    service of all its calls (none released yet)."""
    n = len(spec.calls)
    children: list[list[int]] = [[] for _ in range(n)]
    for c in spec.calls:
        for p in c.parents:
            children[p].append(c.index)
    return ProgramRun(
        spec,
        Program(id=spec.id, created=now, last_arrival=now),
        [len(c.parents) for c in spec.calls],
        children,
        [0.0] * n,
        future,
        n,
    )


def resubmission(old: EngineRequest, run: CallRun, base_output: int) -> EngineRequest:
    """The request a call preempted for priority comes back as: its prompt plus the
    ``base_output`` tokens it has generated so far, asking for the rest."""
    left = run.spec.output_tokens - base_output
    return EngineRequest(
        id=old.id,
        prompt_tokens=run.spec.prompt_tokens + base_output,
        target_tokens=left,
        max_tokens=left,
        arrival=old.arrival,
    )


def call_result(
    run: CallRun, call: Call, first: float | None, preemptions: int, now: float
) -> CallResult:
    """What a call finished at ``now`` leaves in the run's results."""
    spec = run.spec
    return CallResult(
        program=run.prog.record.id,
        index=spec.index,
        engine=run.engine.index,
        arrival=call.arrival,
        first_token=first if first is not None else now,
        finished=now,
        prompt_tokens=spec.prompt_tokens,
        output_tokens=spec.output_tokens,
        cached_tokens=run.cached,
        preemptions=preemptions,
        wait=call.wait,
    )


def program_result(prog: ProgramRun, last: int, now: float) -> ProgramResult:
    """What a program leaves when its call ``last`` finishes, the last of its calls, at
    ``now``."""
    return ProgramResult(
        id=prog.record.id,
        kind=prog.spec.kind,
        arrival=prog.spec.arrival,
        finished=now,
        output_tokens=prog.tokens,
        tool_s=prog.tool_path[last],
        calls=len(prog.spec.calls),
    )
