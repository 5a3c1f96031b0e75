"""The prefix index: what each engine holds, matched block by block."""

from __future__ import annotations

from proxy.kvhints.index import PrefixIndex


def test_match_is_the_longest_held_prefix_per_engine() -> None:
    index = PrefixIndex()
    index.stored("a", [1, 2, 3])
    index.stored("b", [1, 2, 7])
    index.stored("c", [2, 3])  # not a prefix: block 1 missing
    assert index.match([1, 2, 3, 4], ["a", "b", "c", "d"]) == {"a": 3, "b": 2, "c": 0, "d": 0}


def test_removed_and_cleared() -> None:
    index = PrefixIndex()
    index.stored("a", [1, 2, 3])
    index.stored("b", [1, 2])
    index.removed("a", [2, 99])
    assert index.match([1, 2, 3], ["a", "b"]) == {"a": 1, "b": 2}
    index.cleared("b")
    assert index.match([1, 2, 3], ["a", "b"]) == {"a": 1, "b": 0}
    assert (len(index), index.size("a"), index.size("b")) == (2, 2, 0)


def test_capacity_drops_the_least_recently_stored() -> None:
    index = PrefixIndex(capacity=3)
    index.stored("a", [1, 2, 3])
    index.stored("a", [1])  # touched: 2 is now the oldest
    index.stored("a", [4])
    assert index.match([1], ["a"]) == {"a": 1}
    assert index.match([2], ["a"]) == {"a": 0}
    assert index.size("a") == 3
