"""MLFQ (FastServe-like): every call enters the top queue; demoted by its own service."""

from __future__ import annotations

from proxy.policies.base import Priority
from proxy.policies.levels import LevelsConfig
from proxy.policies.mlfq import MLFQ
from proxy.records import Call, Program

from .harness import chain, run

LEVELS = LevelsConfig(levels=4, first=2.0, growth=2.0, beta=None)  # bounds 2, 4, 8


def test_new_calls_enter_the_top_whatever_the_program_used() -> None:
    policy = MLFQ(LEVELS)
    program = Program("p", created=0.0, service=1000.0)
    call = Call("c", "p", arrival=5.0)
    assert policy.on_arrival(call=call, program=program, now=5.0) == Priority(0, 5.0)
    assert call.level == 0


def test_demoted_by_its_own_service() -> None:
    policy, program = MLFQ(LEVELS), Program("p", created=0.0)
    call = Call("c", "p", arrival=0.0)
    policy.on_arrival(call=call, program=program, now=0.0)
    levels = []
    for service in (1.0, 2.0, 3.9, 4.0, 100.0):
        call.service = service
        levels.append(policy.on_service(call=call, program=program, now=service).level)
    assert levels == [0, 1, 1, 2, 3]


def test_anti_starvation_uses_the_calls_own_w_and_t() -> None:
    policy = MLFQ(LevelsConfig(levels=4, first=2.0, growth=2.0, beta=1.0))
    program = Program("p", created=0.0, service=1e6, wait=0.0)
    call = Call("c", "p", arrival=0.0, service=5.0, queued_since=10.0)
    assert policy.priority(call=call, program=program, now=14.0).level == 2  # W 4 < T 5
    assert policy.priority(call=call, program=program, now=15.0) == Priority(0, 0.0)
    policy.on_finish(call=call, program=program, now=16.0)
    assert len(policy.guard) == 0


def test_a_long_programs_new_calls_overtake_a_short_programs_call() -> None:
    """Program-level head-of-line blocking: ``long``'s second call starts at the top again."""
    trace = run(MLFQ(LEVELS), chain("long", [2, 2]) + chain("short", [3], at=1))
    assert trace.finish("long2") < trace.finish("short1")
