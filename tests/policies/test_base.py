"""The contract module: Priority ordering, the live wait, the optional BasePolicy."""

from __future__ import annotations

import pytest

from proxy.policies import BUILTIN
from proxy.policies.base import (
    BasePolicy,
    Policy,
    Priority,
    assigned,
    live_wait,
    program_scalar,
)
from proxy.policies.registry import PolicyRegistry
from proxy.records import Call, Program


def test_priority_orders_by_level_then_key_then_group() -> None:
    ranks = [Priority(1, 0.0), Priority(0, 9.0, "b"), Priority(0, 9.0, "a"), Priority(0, 1.0)]
    assert sorted(ranks) == [
        Priority(0, 1.0),
        Priority(0, 9.0, "a"),
        Priority(0, 9.0, "b"),
        Priority(1, 0.0),
    ]
    assert Priority(0) == Priority(0, 0.0, "")


def test_priority_is_immutable_and_ordered_field_by_field() -> None:
    rank = Priority(2, 1.5)
    with pytest.raises(AttributeError):
        rank.level = 0  # type: ignore[misc]
    assert not hasattr(rank, "__dict__")
    assert hash(rank) == hash(Priority(2, 1.5))
    assert (rank.key, rank.group) == (1.5, "")
    assert Priority(1, 9.0) < Priority(2, 0.0) < Priority(2, 0.5) < Priority(2, 0.5, "b")


def test_live_wait_counts_the_open_stretch() -> None:
    call = Call("c", "p", arrival=0.0, wait=2.0)
    assert live_wait(call, now=10.0) == 2.0
    call.queued_since = 7.0
    assert live_wait(call, now=10.0) == 5.0
    assert live_wait(call, now=6.0) == 2.0  # a clock that went backwards adds nothing


def test_assigned_records_the_level_on_the_call() -> None:
    call = Call("c", "p", arrival=0.0)
    assert assigned(call, Priority(3, 1.0)) == Priority(3, 1.0)
    assert call.level == 3


class _Fixed(BasePolicy):
    name = "fixed"

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        return assigned(call, Priority(1, call.arrival))


def test_base_policy_accounts_service_the_plas_way() -> None:
    policy = _Fixed()
    program = Program("p", created=0.0, service=5.0)
    call = Call("c", "p", arrival=1.0)
    assert policy.on_arrival(call=call, program=program, now=1.0) == Priority(1, 1.0)
    assert call.start_service == 5.0
    call.service = 2.0
    assert policy.on_service(call=call, program=program, now=2.0) == Priority(1, 1.0)
    policy.on_finish(call=call, program=program, now=3.0)
    assert program.service == 7.0
    assert isinstance(policy, Policy)
    assert policy.live_ok
    assert repr(policy) == "<policy fixed>"


def test_base_policy_priority_must_be_implemented() -> None:
    with pytest.raises(NotImplementedError):
        BasePolicy().priority(call=Call("c", "p", 0.0), program=Program("p", 0.0), now=0.0)


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_every_builtin_satisfies_the_protocol(name: str) -> None:
    policy = BUILTIN[name]()
    assert isinstance(policy, Policy)
    assert policy.name == name
    assert policy.live_ok is (name != "srpt")


def test_the_program_scalar_is_the_field_the_policy_declares() -> None:
    program = Program(id="p", created=0.0)
    program.service, program.critical_path = 5.0, 2.0
    registry = PolicyRegistry()
    ranked = {name: program_scalar(registry.create(name), program) for name in BUILTIN}
    assert ranked.pop("atlas") == 2.0  # parallel calls: the longest thread, not their sum
    assert set(ranked.values()) == {5.0}

    class Undeclared:  # a plug-in that does not subclass BasePolicy or say what it ranks by
        pass

    assert program_scalar(Undeclared(), program) == 5.0
