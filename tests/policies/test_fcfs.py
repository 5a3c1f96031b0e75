"""FCFS: arrival order, one level, never demoted."""

from __future__ import annotations

from proxy.policies.base import Priority
from proxy.policies.fcfs import FCFS
from proxy.records import Call, Program

from .harness import chain, run


def test_ranks_by_arrival_only() -> None:
    policy, program = FCFS(), Program("p", created=0.0, service=100.0)
    call = Call("c", "p", arrival=4.0)
    assert policy.on_arrival(call=call, program=program, now=4.0) == Priority(0, 4.0)
    call.service = 1e6
    assert policy.on_service(call=call, program=program, now=9.0) == Priority(0, 4.0)


def test_keeps_program_service_for_the_table() -> None:
    trace = run(FCFS(), chain("a", [2, 3]))
    assert trace.programs["a"].service == 5.0


def test_never_preempts_a_long_call() -> None:
    trace = run(FCFS(), chain("long", [5]) + chain("short", [1]))
    assert trace.ran[:5] == [("long1",)] * 5
    assert trace.calls["short1"].wait == 5.0
