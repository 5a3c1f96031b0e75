"""LAS: least attained service per call, continuous."""

from __future__ import annotations

from proxy.policies.base import Priority
from proxy.policies.las import LAS
from proxy.records import Call, Program

from .harness import chain, run


def test_ranks_by_the_calls_own_service() -> None:
    policy, program = LAS(), Program("p", created=0.0, service=50.0)
    call = Call("c", "p", arrival=3.0)
    assert policy.on_arrival(call=call, program=program, now=3.0) == Priority(0, 0.0)
    call.service = 2.5
    assert policy.on_service(call=call, program=program, now=4.0) == Priority(0, 2.5)


def test_degrades_into_round_robin_between_equal_calls() -> None:
    """Why Autellix discretizes: two equal calls overtake each other every slot."""
    trace = run(LAS(), chain("a", [3]) + chain("b", [3]))
    assert trace.ran == [("a1",), ("b1",), ("a1",), ("b1",), ("a1",), ("b1",)]
