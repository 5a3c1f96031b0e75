"""SRPT: the clairvoyant yardstick."""

from __future__ import annotations

import pytest

from proxy.errors import ConfigError
from proxy.policies.base import Priority
from proxy.policies.srpt import SRPT
from proxy.records import Call, Program

from .harness import chain, run


def test_ranks_by_true_remaining_work() -> None:
    policy, program = SRPT(), Program("p", created=0.0)
    call = Call("c", "p", arrival=0.0, oracle_remaining=7.0)
    assert policy.on_arrival(call=call, program=program, now=0.0) == Priority(0, 7.0)


def test_serves_the_shortest_remaining_first() -> None:
    trace = run(SRPT(), chain("long", [4]) + chain("short", [2], at=1))
    assert trace.finish("short1") == 3
    assert trace.finish("long1") == 6


def test_is_not_live_and_refuses_calls_without_an_oracle() -> None:
    assert SRPT.live_ok is False
    with pytest.raises(ConfigError, match=r"srpt.*clairvoyant.*'c'.*simulator"):
        SRPT().priority(call=Call("c", "p", arrival=0.0), program=Program("p", 0.0), now=0.0)
