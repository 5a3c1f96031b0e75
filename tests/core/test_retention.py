"""The core's KV retention rules: eviction order, learned TTL, held contexts and their bound."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.retention import (
    TTL_PRIOR_S,
    EvictionOrder,
    GapLearner,
    Holds,
    RetentionConfig,
    quantile,
)

# -- config -------------------------------------------------------------------------------


def test_config_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="evict"):
        RetentionConfig(evict="mru")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        RetentionConfig(ttl=-1.0)
    with pytest.raises(ValueError, match="ttl"):
        RetentionConfig(ttl="forever")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pinned_share"):
        RetentionConfig(max_pinned_share=1.5)
    assert not RetentionConfig().active
    assert RetentionConfig(evict="rank").active
    assert RetentionConfig(ttl="learned").holds
    assert not RetentionConfig(ttl="learned", max_pinned_share=0.0).holds


def test_config_parses_text_settings() -> None:
    assert RetentionConfig.parse("rank", "learned") == RetentionConfig("rank", "learned")
    assert RetentionConfig.parse("lru", "none").ttl is None
    assert RetentionConfig.parse("LRU", "2.5", 0.1) == RetentionConfig("lru", 2.5, 0.1)
    with pytest.raises(ValueError, match="ttl"):
        RetentionConfig.parse("rank", "soon")
    with pytest.raises(ValueError, match="evict"):
        RetentionConfig.parse("random", "none")


# -- eviction order ----------------------------------------------------------------------


def test_lru_order_ignores_levels() -> None:
    order: EvictionOrder[str] = EvictionOrder("lru")
    order.put("a", "p", 2, level=0)
    order.put("b", "q", 2, level=5)
    order.put("c", "r", 2, level=1)
    order.touch("a")
    assert order.order() == ["b", "c", "a"]


def test_rank_order_evicts_worst_level_first_then_lru() -> None:
    order: EvictionOrder[str] = EvictionOrder("rank")
    order.put("a", "p", 2, level=0)
    order.put("b", "q", 3, level=2)
    order.put("c", "r", 4, level=2)
    order.put("d", "s", 5, level=1)
    order.touch("b")
    assert order.order() == ["c", "b", "d", "a"]
    assert order.evict() == ("c", 4)
    assert order.blocks == 2 + 3 + 5


def test_a_programs_new_rank_moves_its_entries() -> None:
    order: EvictionOrder[str] = EvictionOrder("rank")
    order.put("p0", "p", 1, level=3)
    order.put("q0", "q", 1, level=2)
    order.put("p1", "p", 1, level=3)
    order.set_level("p", 0)  # p's next call arrived ranked best
    assert order.order() == ["q0", "p0", "p1"]
    order.set_level("q", 0)
    assert order.order() == ["p0", "p1", "q0"]


@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.integers(0, 4), st.integers(1, 5), st.booleans()),
        max_size=40,
    )
)
def test_rank_victim_is_always_a_worst_level_entry(ops: list[tuple[int, int, int, bool]]) -> None:
    order: EvictionOrder[int] = EvictionOrder("rank")
    levels: dict[int, int] = {}
    sizes: dict[int, int] = {}
    for key, level, blocks, touch in ops:
        if touch and key in levels:
            order.touch(key)
            continue
        order.put(key, f"p{key}", blocks, level)
        levels[key], sizes[key] = level, blocks
    assert order.blocks == sum(sizes.values())
    seen: list[int] = []
    while (victim := order.evict()) is not None:
        key, blocks = victim
        assert blocks == sizes[key]
        assert levels[key] == max(levels[k] for k in levels if k not in seen)
        seen.append(key)
    assert order.blocks == 0
    assert sorted(seen) == sorted(levels)


# -- learned TTL -------------------------------------------------------------------------


def test_quantile_interpolates() -> None:
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert quantile([0.0, 10.0], 0.9) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="no values"):
        quantile([], 0.5)


def test_ttl_off_fixed_and_prior() -> None:
    assert GapLearner(RetentionConfig()).ttl("p") is None
    assert GapLearner(RetentionConfig(ttl=3.0)).ttl("p") == 3.0
    assert GapLearner(RetentionConfig(ttl="learned")).ttl("p") == TTL_PRIOR_S


def test_ttl_learns_the_programs_own_gaps() -> None:
    learner = GapLearner(RetentionConfig(ttl="learned"))
    t = 0.0
    for gap in (1.0, 2.0, 3.0, 4.0, 5.0):
        learner.finished("p", t)
        t += gap
        assert learner.arrived("p", t) == gap
    assert learner.ttl("p") == pytest.approx(quantile([1, 2, 3, 4, 5], 0.9))
    # A new program starts from the pooled gaps of the others, not from the fixed prior.
    assert learner.ttl("q") == learner.ttl("p")
    # A call arriving with no finish before it closes no gap.
    assert learner.arrived("q", 9.0) is None


def test_learned_ttl_is_capped() -> None:
    learner = GapLearner(RetentionConfig(ttl="learned", ttl_max_s=10.0))
    for i in range(5):
        learner.finished("p", i * 1000.0)
        learner.arrived("p", i * 1000.0 + 500.0)
    assert learner.ttl("p") == 10.0


@given(st.lists(st.floats(0.0, 100.0), min_size=1, max_size=50))
def test_learned_ttl_stays_within_the_gaps_and_the_cap(gaps: list[float]) -> None:
    learner = GapLearner(RetentionConfig(ttl="learned"))
    t = 0.0
    for gap in gaps:
        learner.finished("p", t)
        t += gap
        learner.arrived("p", t)
    ttl = learner.ttl("p")
    assert ttl is not None
    assert 0.0 <= ttl <= 30.0
    if len(gaps) >= 3:
        recent = gaps[-16:]
        assert min(min(recent), 30.0) - 1e-9 <= ttl <= max(recent) + 1e-9


# -- holds -------------------------------------------------------------------------------


def test_holds_end_by_ttl_by_program_or_by_release() -> None:
    holds: Holds[str] = Holds(RetentionConfig(ttl=2.0, max_pinned_share=0.5), 100)
    assert holds.hold("a", "p", 10, level=0, ttl=2.0, now=0.0) == (True, [])
    assert holds.hold("b", "q", 10, level=0, ttl=5.0, now=0.0)[0]
    assert holds.pinned == 20
    assert holds.share == 0.2
    assert holds.expired(1.9) == []
    assert [h.key for h in holds.expired(2.0)] == ["a"]
    assert [h.key for h in holds.release_program("q")] == ["b"]
    assert holds.pinned == 0
    assert len(holds) == 0
    assert holds.expired(10.0) == []  # the released hold's deadline is stale


def test_holds_stay_within_the_pin_bound() -> None:
    holds: Holds[str] = Holds(RetentionConfig("rank", 9.0, 0.25), 100)
    assert holds.limit == 25
    assert not holds.hold("big", "p", 26, level=0, ttl=9.0, now=0.0)[0]
    assert holds.hold("a", "p", 20, level=1, ttl=9.0, now=0.0)[0]
    held, displaced = holds.hold("b", "q", 10, level=3, ttl=9.0, now=0.0)
    assert not held
    assert displaced == []
    held, displaced = holds.hold("c", "r", 10, level=0, ttl=9.0, now=0.0)
    assert held
    assert [h.key for h in displaced] == ["a"]
    assert holds.pinned == 10
    assert holds.refused == 2


def test_lru_holds_displace_the_oldest() -> None:
    holds: Holds[str] = Holds(RetentionConfig(ttl=9.0, max_pinned_share=0.2), 100)
    holds.hold("a", "p", 10, level=0, ttl=9.0, now=0.0)
    holds.hold("b", "q", 10, level=0, ttl=9.0, now=1.0)
    held, displaced = holds.hold("c", "r", 10, level=5, ttl=9.0, now=2.0)
    assert held
    assert [h.key for h in displaced] == ["a"]


def test_shed_frees_worst_holds_first() -> None:
    holds: Holds[str] = Holds(RetentionConfig("rank", 9.0, 0.5), 100)
    holds.hold("a", "p", 10, level=0, ttl=9.0, now=0.0)
    holds.hold("b", "q", 10, level=4, ttl=9.0, now=0.0)
    holds.hold("c", "r", 10, level=2, ttl=9.0, now=0.0)
    assert [h.key for h in holds.shed(15)] == ["b", "c"]
    assert holds.pinned == 10


def test_no_holds_without_a_ttl() -> None:
    holds: Holds[str] = Holds(RetentionConfig(), 100)
    assert holds.limit == 0
    assert not holds.hold("a", "p", 1, level=0, ttl=None, now=0.0)[0]


@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(1, 30), st.integers(0, 4), st.floats(0.1, 5.0)),
        max_size=40,
    ),
    st.floats(0.0, 1.0),
)
def test_pinned_never_passes_the_bound(
    ops: list[tuple[int, int, int, float]], share: float
) -> None:
    holds: Holds[int] = Holds(RetentionConfig("rank", "learned", share), 100)
    now = 0.0
    for key, blocks, level, ttl in ops:
        now += 0.5
        holds.expired(now)
        holds.hold(key, f"p{key % 3}", blocks, level, ttl, now)
        assert holds.pinned <= holds.limit <= 100 * share
        assert holds.pinned == sum(h.blocks for h in map(holds.get, range(7)) if h is not None)
