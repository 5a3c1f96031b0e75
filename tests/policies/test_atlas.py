"""ATLAS: a program's calls share one priority, from its critical path."""

from __future__ import annotations

from proxy.policies.atlas import ATLAS, ATLASConfig
from proxy.policies.base import Priority
from proxy.records import Call, Program

from .harness import CallSpec, run

CONFIG = ATLASConfig(levels=5, first=2.0, growth=2.0, beta=None)  # bounds 2, 4, 8, 16


def _arrive(policy: ATLAS, program: Program, call_id: str, now: float) -> Call:
    call = Call(call_id, program.id, arrival=now)
    program.active[call_id] = call
    policy.on_arrival(call=call, program=program, now=now)
    return call


def _finish(policy: ATLAS, program: Program, call: Call, now: float) -> None:
    policy.on_finish(call=call, program=program, now=now)
    del program.active[call.id]


def test_new_calls_start_at_the_critical_path_and_share_a_priority() -> None:
    policy, program = ATLAS(CONFIG), Program("p", created=1.0, critical_path=3.0)
    a, b = _arrive(policy, program, "a", 5.0), _arrive(policy, program, "b", 6.0)
    assert (a.start_service, b.start_service) == (3.0, 3.0)
    rank = Priority(1, 1.0, "p")  # level of 3; keyed by the program's order, grouped by it
    assert policy.priority(call=a, program=program, now=6.0) == rank
    assert policy.priority(call=b, program=program, now=6.0) == rank


def test_siblings_sink_together_with_the_longest_thread() -> None:
    policy, program = ATLAS(CONFIG), Program("p", created=0.0)
    a, b = _arrive(policy, program, "a", 0.0), _arrive(policy, program, "b", 0.0)
    a.service = 2.0  # only a ran: the program's live path is 2
    assert policy.on_service(call=a, program=program, now=2.0).level == 1
    assert policy.priority(call=b, program=program, now=2.0).level == 1


def test_finish_records_the_longest_path_not_the_sum() -> None:
    policy, program = ATLAS(CONFIG), Program("p", created=0.0)
    root = _arrive(policy, program, "root", 0.0)
    root.service = 1.0
    _finish(policy, program, root, 1.0)
    kids = [_arrive(policy, program, f"k{i}", 1.0) for i in range(3)]
    for kid, service in zip(kids, (1.0, 3.0, 2.0), strict=True):
        kid.service = service
        _finish(policy, program, kid, 1.0 + service)
    assert program.critical_path == 4.0
    assert program.service == 7.0  # the table's cumulative service
    join = _arrive(policy, program, "join", 4.0)
    assert join.start_service == 4.0


def test_a_fan_out_runs_its_siblings_together() -> None:
    """Siblings are adjacent in the order, so a batch of 3 serves them side by side."""
    specs = [CallSpec("r", "p", 1)]
    specs += [CallSpec(f"k{i}", "p", 2, ("r",)) for i in range(3)]
    specs += [CallSpec("q1", "q", 6, at=1)]
    trace = run(ATLAS(CONFIG), specs, capacity=3)
    assert trace.ran[1] == ("k0", "k1", "k2")
    # One slot on, the program's live path (2) has sunk all three below q's fresh call at
    # once: they stay together in the order, and two of them share the batch with q1.
    assert trace.ran[2] == ("q1", "k0", "k1")
