"""llm-d's turn-number priority: deeper sessions first, aged by wait, reset after idling."""

from __future__ import annotations

import math

from proxy.policies.base import Priority
from proxy.policies.registry import PolicyRegistry
from proxy.policies.turn_priority import TurnPriority, TurnPriorityConfig
from proxy.records import Call, Program


def session(pid: str, finished: int, *, last: float | None = 0.0) -> Program:
    return Program(pid, created=0.0, calls=finished, last_completion=last)


def arrive(policy: TurnPriority, program: Program, at: float) -> tuple[Call, Priority]:
    call = Call(f"{program.id}/{program.calls}", program.id, arrival=at)
    program.calls += 1
    program.active[call.id] = call
    return call, policy.on_arrival(call=call, program=program, now=at)


def test_deeper_session_goes_first() -> None:
    policy = TurnPriority()
    _, deep = arrive(policy, session("deep", 9, last=10.0), 10.0)
    _, shallow = arrive(policy, session("shallow", 1, last=10.0), 10.0)
    assert deep < shallow  # turn 10 against turn 2


def test_waiting_long_enough_overtakes_depth() -> None:
    # At 0.05 turns per second, 8 turns of depth are worth 160 s of waiting.
    policy = TurnPriority()
    _, old = arrive(policy, session("shallow", 1, last=0.0), 0.0)
    _, deep_soon = arrive(policy, session("deep", 9, last=100.0), 100.0)
    _, deep_late = arrive(policy, session("deep2", 9, last=200.0), 200.0)
    assert deep_soon < old < deep_late


def test_idle_session_counts_as_turn_one() -> None:
    policy = TurnPriority(TurnPriorityConfig(inactivity_s=120.0))
    program = session("p", 30, last=0.0)
    call, _ = arrive(policy, program, 500.0)
    assert policy.turn(call, program) == 1
    fresh = session("q", 30, last=450.0)
    call, _ = arrive(policy, fresh, 500.0)
    assert policy.turn(call, fresh) == 31


def test_dispatched_siblings_count_and_waiting_ones_do_not() -> None:
    policy = TurnPriority()
    program = session("p", 2, last=1.0)
    running, _ = arrive(policy, program, 2.0)
    running.started_at = 2.0
    waiting, _ = arrive(policy, program, 2.0)
    call, _ = arrive(policy, program, 2.0)
    assert policy.turn(call, program) == 4  # two finished, one running, then this one
    assert waiting.started_at is None


def test_one_level_and_a_rank_that_holds_while_waiting() -> None:
    policy = TurnPriority()
    program = session("p", 3)
    call, first = arrive(policy, program, 5.0)
    assert first.level == 0
    assert policy.stable_until(call=call, program=program, now=5.0) == math.inf
    assert policy.priority(call=call, program=program, now=400.0) == first


def test_registered() -> None:
    assert isinstance(PolicyRegistry().create("turn-priority", {}), TurnPriority)
