"""Program-level FCFS (Continuum's order): an earlier program's calls go first."""

from __future__ import annotations

from proxy.policies.program_fcfs import ProgramFCFS
from proxy.policies.registry import PolicyRegistry
from proxy.records import Call, Program


def test_earlier_program_first_whatever_its_service() -> None:
    policy = ProgramFCFS()
    early = Program("early", created=1.0, service=1e6)
    late = Program("late", created=5.0)
    a = policy.on_arrival(call=Call("e/9", "early", arrival=90.0), program=early, now=90.0)
    b = policy.on_arrival(call=Call("l/1", "late", arrival=6.0), program=late, now=90.0)
    assert a < b
    assert (a.level, b.level) == (0, 0)


def test_registered() -> None:
    assert isinstance(PolicyRegistry().create("program-fcfs"), ProgramFCFS)
