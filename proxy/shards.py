"""Maps split into shards, so that no single insertion stalls the event loop.

A Python dict grows by copying every entry into a table twice the size: at a million entries
one such insertion takes tens of milliseconds (an ``OrderedDict`` more), during which nothing
else runs. Split over ``SHARDS`` maps by the key's hash, each copy moves a 64th of the entries.
Look-ups cost one hash (cached on ``str``) and one index more.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

SHARDS = 64
_MASK = SHARDS - 1


class ShardedDict(Generic[K, V]):
    """The part of ``dict`` the process table uses, over ``SHARDS`` dicts."""

    __slots__ = ("_len", "_shards")

    def __init__(self) -> None:
        self._shards: list[dict[K, V]] = [self._shard() for _ in range(SHARDS)]
        self._len = 0

    @staticmethod
    def _shard() -> dict[K, V]:
        return {}

    def get(self, key: K) -> V | None:
        return self._shards[hash(key) & _MASK].get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._shards[hash(key) & _MASK]

    def __setitem__(self, key: K, value: V) -> None:
        shard = self._shards[hash(key) & _MASK]
        if key not in shard:
            self._len += 1
        shard[key] = value

    def __delitem__(self, key: K) -> None:
        del self._shards[hash(key) & _MASK][key]
        self._len -= 1

    def pop(self, key: K, default: V | None = None) -> V | None:
        shard = self._shards[hash(key) & _MASK]
        if key in shard:
            self._len -= 1
            return shard.pop(key)
        return default

    def __len__(self) -> int:
        return self._len

    def values(self) -> Iterator[V]:
        for shard in self._shards:
            yield from shard.values()


class ShardedLru(ShardedDict[K, V]):
    """A ``ShardedDict`` whose shards keep their entries in insertion order, so the oldest of
    all is among the shards' heads. ``pop_while`` walks every shard's old end, so its cost is
    what it removes."""

    __slots__ = ()

    @staticmethod
    def _shard() -> dict[K, V]:
        return OrderedDict()

    def _ordered(self, index: int) -> OrderedDict[K, V]:
        shard = self._shards[index]
        assert isinstance(shard, OrderedDict)
        return shard

    def heads(self) -> Iterator[tuple[int, K, V]]:
        """Each non-empty shard's oldest entry, with the shard's index."""
        for i, shard in enumerate(self._shards):
            if shard:
                key, value = next(iter(shard.items()))
                yield i, key, value

    def pop_head(self, shard: int) -> tuple[K, V]:
        self._len -= 1
        return self._ordered(shard).popitem(last=False)

    def pop_while(self, keep_going: Callable[[V], bool], limit: int | None) -> list[K]:
        """From each shard's old end, remove entries while ``keep_going(value)`` holds, at most
        ``limit`` in all; returns their keys."""
        out: list[K] = []
        for shard in self._shards:
            while shard and (limit is None or len(out) < limit):
                key, value = next(iter(shard.items()))
                if not keep_going(value):
                    break
                del shard[key]
                out.append(key)
        self._len -= len(out)
        return out
