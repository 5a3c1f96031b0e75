"""PLAS: a call ranks by its program's attained service plus its own."""

from __future__ import annotations

from proxy.policies.base import Priority
from proxy.policies.plas import PLAS, PLASConfig
from proxy.policies.tenant import TenantFloorConfig
from proxy.records import Call, Program

from .harness import chain, run

CONFIG = PLASConfig(levels=5, first=2.0, growth=2.0, beta=None)  # bounds 2, 4, 8, 16


def test_a_new_call_enters_the_queue_of_its_programs_service() -> None:
    policy = PLAS(CONFIG)
    program = Program("p", created=0.0, service=5.0)
    call = Call("c", "p", arrival=9.0)
    assert policy.on_arrival(call=call, program=program, now=9.0) == Priority(2, 9.0)
    assert call.start_service == 5.0
    assert call.level == 2


def test_demoted_by_program_plus_own_service() -> None:
    policy, program = PLAS(CONFIG), Program("p", created=0.0, service=3.0)
    call = Call("c", "p", arrival=0.0)
    policy.on_arrival(call=call, program=program, now=0.0)
    call.service = 1.0
    assert policy.on_service(call=call, program=program, now=1.0).level == 2  # 3 + 1 = 4


def test_finish_sums_a_single_threaded_programs_calls() -> None:
    trace = run(PLAS(CONFIG), chain("p", [2, 3, 1]))
    assert trace.programs["p"].service == 6.0
    assert [trace.calls[c].start_service for c in ("p1", "p2", "p3")] == [0.0, 2.0, 5.0]


def test_a_short_program_overtakes_a_long_programs_later_calls() -> None:
    trace = run(PLAS(CONFIG), chain("long", [4, 4]) + chain("short", [1, 1], at=1))
    assert trace.finish("short2") < trace.finish("long2")


def test_starving_call_jumps_to_the_top_and_counts_from_there() -> None:
    policy = PLAS(PLASConfig(levels=5, first=2.0, growth=2.0, beta=1.0))
    program = Program("p", created=0.0, service=7.0, wait=1.0)
    call = Call("c", "p", arrival=0.0, queued_since=0.0)
    assert policy.on_arrival(call=call, program=program, now=0.0).level == 2
    # W = 1 + 6 = 7 >= beta * T = 7: promoted to the top; its own W and T restart there.
    assert policy.priority(call=call, program=program, now=6.0) == Priority(0, 0.0)
    call.wait, call.queued_since, call.service = 6.0, None, 2.0
    assert policy.on_service(call=call, program=program, now=8.0).level == 1
    policy.on_finish(call=call, program=program, now=8.0)
    assert program.service == 9.0  # the true service, untouched by the promotion
    assert len(policy.guard) == 0


def test_tenant_floor_ranks_a_fresh_program_at_its_tenants_service() -> None:
    policy = PLAS(
        PLASConfig(levels=5, first=2.0, growth=2.0, beta=None, tenant_floor=TenantFloorConfig())
    )
    old = Program("old", created=0.0, tenant="t")
    first = Call("a", "old", arrival=0.0)
    policy.on_arrival(call=first, program=old, now=0.0)
    first.service = 6.0
    policy.on_finish(call=first, program=old, now=6.0)
    fresh = Program("fresh", created=6.0, tenant="t")
    call = Call("b", "fresh", arrival=6.0)
    assert policy.on_arrival(call=call, program=fresh, now=6.0).level == 2  # as if at 6
    other = Program("other", created=6.0, tenant="u")
    assert policy.on_arrival(call=Call("c", "other", 6.0), program=other, now=6.0).level == 0
