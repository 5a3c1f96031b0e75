"""The cache side of KV retention: eviction order and held contexts within the pin bound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from proxy.core.kvcache import IDLE, EvictionOrder, Holds
from proxy.core.retention import RetentionConfig

# -- eviction order ----------------------------------------------------------------------


def test_lru_order_ignores_ranks() -> None:
    order: EvictionOrder[str] = EvictionOrder("lru")
    order.put("a", "p", 2)
    order.put("b", "q", 2)
    order.waiting("b", 0)
    order.put("c", "r", 2)
    order.touch("a")
    assert order.order() == ["b", "c", "a"]
    assert order.level("q") == 0


def test_rank_order_evicts_idle_contexts_then_the_worst_waiting() -> None:
    order: EvictionOrder[str] = EvictionOrder("rank")
    for key in "abcde":
        order.put(key, key, 1)
    order.waiting("b", 3)
    order.waiting("c", 1)
    order.waiting("d", 3)  # arrived after b at the same level: served after it
    order.touch("a")
    # Idle first (LRU: e before a), then level 3 latest arrival first, then level 1.
    assert order.order() == ["e", "a", "d", "b", "c"]
    assert order.evict() == ("e", 1)
    order.served("c")  # c's call was admitted: idle again, at its place by last use
    assert order.order() == ["c", "a", "d", "b"]
    order.touch("c")  # its call used it
    assert order.order() == ["a", "c", "d", "b"]


def test_a_program_stays_awaited_while_any_of_its_calls_waits() -> None:
    order: EvictionOrder[str] = EvictionOrder("rank")
    order.put("p0", "p", 1)
    order.put("q0", "q", 1)
    order.waiting("p", 4)
    order.waiting("p", 2)  # a parallel sibling, better ranked
    assert order.level("p") == 2
    order.served("p")
    assert order.level("p") == 2
    assert order.order() == ["q0", "p0"]
    order.served("p")
    assert order.level("p") == IDLE
    order.served("p")  # nothing waits: no effect
    assert order.blocks == 2


@given(
    st.lists(
        st.tuples(st.integers(0, 9), st.integers(0, 4), st.integers(1, 5), st.integers(0, 3)),
        max_size=40,
    )
)
def test_rank_victims_come_in_level_order(ops: list[tuple[int, int, int, int]]) -> None:
    order: EvictionOrder[int] = EvictionOrder("rank")
    sizes: dict[int, int] = {}
    for key, level, blocks, op in ops:
        program = f"p{key % 4}"
        if op == 0:
            order.put(key, program, blocks)
            sizes[key] = blocks
        elif op == 1:
            order.waiting(program, level)
        elif op == 2:
            order.served(program)
        else:
            order.touch(key)
    assert order.blocks == sum(sizes.values())
    levels = []
    while (victim := order.evict()) is not None:
        key, blocks = victim
        assert blocks == sizes.pop(key)
        levels.append(order.level(f"p{key % 4}"))
    assert levels == sorted(levels, reverse=True)
    assert order.blocks == 0
    assert not sizes


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
