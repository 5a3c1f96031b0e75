"""Multi-level queues and anti-starvation."""

from __future__ import annotations

import math

import pytest

from proxy.policies.levels import Levels, LevelsConfig, StarvationGuard
from proxy.records import Call


def test_geometric_boundaries_and_levels() -> None:
    levels = Levels(levels=5, first=0.5, growth=2.0)
    assert levels.bounds == (0.5, 1.0, 2.0, 4.0)
    assert levels.count == 5
    assert [levels.level_of(s) for s in (0.0, 0.49, 0.5, 0.99, 1.0, 3.9, 4.0, 1e9)] == [
        0,
        0,
        1,
        1,
        2,
        3,
        4,
        4,
    ]


def test_quanta_and_demotion_point() -> None:
    levels = Levels(levels=4, first=3.0, growth=2.0)  # bounds 3, 6, 12
    assert [levels.quantum(i) for i in range(4)] == [3.0, 3.0, 6.0, math.inf]
    assert levels.lower(2) == 6.0
    assert levels.upper(2) == 12.0
    assert levels.until_demotion(4.0) == 2.0
    assert levels.until_demotion(100.0) == math.inf


def test_one_level_is_a_single_fcfs_queue() -> None:
    levels = Levels.from_config(LevelsConfig(levels=1))
    assert levels.count == 1
    assert levels.level_of(1e12) == 0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"levels": 0}, "levels"),
        ({"first": 0.0}, "first"),
        ({"first": math.inf}, "first"),
        ({"growth": 1.0}, "growth"),
        ({"beta": 0.0}, "beta"),
    ],
)
def test_bad_settings_are_refused(settings: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LevelsConfig(**settings)  # type: ignore[arg-type]


def _starving(guard: StarvationGuard, call: Call, now: float, **program: float) -> float | None:
    return guard.service_since_promotion(
        call,
        program_wait=program.get("wait", 0.0),
        program_service=program.get("service", 0.0),
        now=now,
    )


def test_promotes_when_wait_reaches_beta_times_service() -> None:
    guard = StarvationGuard(beta=2.0)
    call = Call("c", "p", arrival=0.0, service=1.0, queued_since=0.0)
    # W = program wait 1 + call wait; T = program service 3 + call service 1 = 4.
    assert _starving(guard, call, 6.0, wait=1.0, service=3.0) is None  # W 7 < 8
    assert _starving(guard, call, 7.0, wait=1.0, service=3.0) == 0.0  # W 8 >= 8
    assert guard.promoted("c")
    assert len(guard) == 1


def test_promotion_resets_only_the_calls_own_w_and_t() -> None:
    guard = StarvationGuard(beta=1.0)
    call = Call("c", "p", arrival=0.0, service=2.0, queued_since=0.0)
    assert _starving(guard, call, 2.0) == 0.0  # W 2 >= T 2
    # The call runs 3 more units: its true service is kept, its count since promotion is 3.
    call.wait, call.queued_since, call.service = 2.0, None, 5.0
    assert _starving(guard, call, 5.0) == 3.0
    # Waiting again: W counts from the promotion (0 so far), T from it (3).
    call.queued_since = 5.0
    assert _starving(guard, call, 7.0) == 3.0  # W 2 < 3: not promoted again
    assert _starving(guard, call, 8.0) == 0.0  # W 3 >= 3: promoted again, from here
    assert call.service == 5.0


def test_nothing_served_never_promotes_and_off_is_off() -> None:
    call = Call("c", "p", arrival=0.0, queued_since=0.0)
    guard = StarvationGuard(beta=1.0)
    assert _starving(guard, call, 100.0) is None
    assert len(guard) == 0
    call.service = 1.0
    assert _starving(StarvationGuard(beta=None), call, 1e9) is None


def test_forget_drops_the_baseline() -> None:
    guard = StarvationGuard(beta=1.0)
    call = Call("c", "p", arrival=0.0, service=1.0, queued_since=0.0)
    assert _starving(guard, call, 5.0) == 0.0
    guard.forget("c")
    guard.forget("c")
    assert not guard.promoted("c")
    assert len(guard) == 0


def test_a_promoted_call_keeps_its_mark_until_it_is_served() -> None:
    """Asking again later must not move the baseline: the rank may not depend on how often the
    mechanism asks (the gate asks at deadlines, the plug-in at every program update)."""
    often, seldom = StarvationGuard(beta=1.0), StarvationGuard(beta=1.0)
    a = Call("c", "p", arrival=0.0, queued_since=0.0)
    b = Call("c", "p", arrival=0.0, queued_since=0.0)
    # The program has served 1 unit: W 1 >= T 1 at t=1, and both are promoted.
    assert _starving(often, a, 1.0, service=1.0) == _starving(seldom, b, 1.0, service=1.0) == 0
    for now in (2.0, 3.0, 4.0):  # one is asked three more times while it waits, unserved
        assert _starving(often, a, now, service=1.0) == 0.0
    # Both run from t=4 and are served 2 units: W since the promotion is 3, T is 1 + 2 = 3,
    # so both are promoted again, whatever was asked between.
    for call in (a, b):
        call.wait, call.queued_since, call.service = 4.0, None, 2.0
    assert _starving(often, a, 4.0, service=1.0) == _starving(seldom, b, 4.0, service=1.0) == 0
