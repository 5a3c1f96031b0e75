"""The built-in balancers, one rule at a time."""

from __future__ import annotations

from proxy.kvhints.balancers import (
    AutellixBalancer,
    Decision,
    LeastLoaded,
    PrefixAware,
    RoundRobin,
    Route,
    Tuning,
    least_loaded,
)
from proxy.kvhints.load import EngineLoad

SHORT = Route("p", prompt_tokens=100)
LONG = Route("p", prompt_tokens=5000, affinity="b")


def engines(*queued: int, cached: tuple[int, ...] = ()) -> list[EngineLoad]:
    cached = cached or (0,) * len(queued)
    return [
        EngineLoad(running=q, waiting=0, kv_usage=0.1, name=chr(ord("a") + i), cached=c)
        for i, (q, c) in enumerate(zip(queued, cached, strict=True))
    ]


def test_least_loaded_counts_waiting_then_kv_then_order() -> None:
    loads = [
        EngineLoad(1, 3, 0.5, "a"),
        EngineLoad(2, 1, 0.9, "b"),
        EngineLoad(3, 0, 0.2, "c"),
    ]
    assert least_loaded(loads) == 2  # same queue as b, less KV
    assert least_loaded([EngineLoad(name="x"), EngineLoad(name="y")]) == 0


def test_round_robin_takes_turns_blind_to_load() -> None:
    balancer = RoundRobin()
    picks = [balancer.choose(call=SHORT, engines=engines(0, 9, 9), now=0).choice for _ in range(4)]
    assert picks == [0, 1, 2, 0]


def test_least_loaded_balancer() -> None:
    assert LeastLoaded().choose(call=LONG, engines=engines(3, 1, 2), now=0) == Decision(
        1, reason="least-loaded"
    )


def test_autellix_short_calls_spread_long_calls_stay() -> None:
    balancer = AutellixBalancer()
    assert balancer.choose(call=SHORT, engines=engines(3, 2, 0), now=0).choice == 2
    # Long, with an affined engine that is not the least loaded: it stays.
    assert balancer.choose(call=LONG, engines=engines(3, 2, 0), now=0) == Decision(
        1, reason="affinity"
    )
    # A new program's long call: least loaded.
    new = Route("q", prompt_tokens=5000)
    assert balancer.choose(call=new, engines=engines(3, 2, 0), now=0) == Decision(2, reason="new")


def test_autellix_threshold_is_inclusive_and_tunable() -> None:
    at = Route("p", prompt_tokens=2048, affinity="a")
    assert AutellixBalancer().choose(call=at, engines=engines(4, 0), now=0).choice == 1
    low = AutellixBalancer(Tuning(threshold=1000))
    assert low.choose(call=at, engines=engines(4, 0), now=0).choice == 0


def test_autellix_moves_when_its_engine_is_gone_or_past_the_guard() -> None:
    balancer = AutellixBalancer(Tuning(guard_factor=2.0, guard_slack=4))
    gone = [EngineLoad(0, 0, 0.0, "a"), EngineLoad(1, 0, 0.0, "c")]
    assert balancer.choose(call=LONG, engines=gone, now=0) == Decision(
        0, moved_from="b", reason="unavailable"
    )
    # b holds 2 x 3 + 4 = 10: still within the guard; 11 is past it.
    assert balancer.choose(call=LONG, engines=engines(3, 10), now=0).choice == 1
    assert balancer.choose(call=LONG, engines=engines(3, 11), now=0) == Decision(
        0, moved_from="b", reason="overloaded"
    )


def test_prefix_aware_goes_where_the_prompt_is_cached() -> None:
    balancer = PrefixAware(Tuning(min_match_blocks=4))
    call = Route("q", prompt_tokens=100, blocks=20)
    assert balancer.choose(call=call, engines=engines(2, 0, 1, cached=(10, 0, 3)), now=0) == (
        Decision(0, reason="prefix")
    )


def test_prefix_aware_ignores_a_prefix_every_engine_holds() -> None:
    # A shared system prompt: all hold 8 blocks, so the match does not steer the call.
    balancer = PrefixAware(Tuning(min_match_blocks=4))
    call = Route("q", prompt_tokens=100, blocks=20)
    assert balancer.choose(call=call, engines=engines(2, 0, 1, cached=(8, 8, 8)), now=0) == (
        Decision(1, reason="short")
    )
    # A gain below the minimum does not steer it either.
    assert balancer.choose(call=call, engines=engines(2, 0, cached=(3, 0)), now=0).choice == 1


def test_prefix_aware_guard_and_fallback_to_affinity() -> None:
    balancer = PrefixAware(Tuning(min_match_blocks=1, guard_factor=1.0, guard_slack=2))
    call = Route("q", prompt_tokens=5000, affinity="c", blocks=20)
    # a holds the prefix but is past the guard (5 > 1 x 0 + 2): the Autellix rule decides.
    assert balancer.choose(call=call, engines=engines(5, 0, 1, cached=(9, 0, 0)), now=0) == (
        Decision(2, reason="affinity")
    )
    # Ties in the match go to the less loaded engine.
    tie = balancer.choose(call=call, engines=engines(2, 1, 0, cached=(9, 9, 0)), now=0)
    assert tie == Decision(1, reason="prefix")
