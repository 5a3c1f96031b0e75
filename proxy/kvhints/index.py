"""Which engine holds which prefix blocks.

Fed from engines' KV events (``BlockStored``, ``BlockRemoved``, ``AllBlocksCleared``) where an
engine publishes them, else from what the proxy routed there (``proxy.kvhints.blocks``: an
approximation). Each engine's entries are kept in recency order and capped, so an engine
that never reports evictions does not grow the index without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

from proxy.kvhints.enginehash import short


class PrefixIndex:
    def __init__(self, capacity: int = 200_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._holders: dict[int, set[str]] = {}
        self._engines: dict[str, OrderedDict[int, None]] = {}
        # Hit accounting of routed calls: blocks asked for, and found on the chosen engine.
        self.lookups = 0
        self.hits = 0  # calls whose chosen engine held at least one block
        self.blocks_asked = 0
        self.blocks_hit = 0
        self.block_sizes: dict[str, int] = {}  # per engine, as its BlockStored events say

    def __len__(self) -> int:
        return sum(len(blocks) for blocks in self._engines.values())

    def size(self, engine: str) -> int:
        blocks = self._engines.get(engine)
        return 0 if blocks is None else len(blocks)

    def engines(self) -> list[str]:
        return list(self._engines)

    def stored(self, engine: str, hashes: Iterable[int]) -> None:
        blocks = self._engines.setdefault(engine, OrderedDict())
        for h in hashes:
            if h in blocks:
                blocks.move_to_end(h)
                continue
            blocks[h] = None
            self._holders.setdefault(h, set()).add(engine)
        while len(blocks) > self.capacity:
            old, _ = blocks.popitem(last=False)
            self._drop(old, engine)

    def removed(self, engine: str, hashes: Iterable[int]) -> None:
        blocks = self._engines.get(engine)
        if blocks is None:
            return
        for h in hashes:
            if h in blocks:
                del blocks[h]
                self._drop(h, engine)

    def cleared(self, engine: str) -> None:
        for h in self._engines.pop(engine, {}):
            self._drop(h, engine)

    def match(self, blocks: Sequence[int], engines: Iterable[str]) -> dict[str, int]:
        """For each of ``engines``, how many leading blocks of ``blocks`` it holds."""
        out = dict.fromkeys(engines, 0)
        alive = set(out)
        for i, h in enumerate(blocks):
            holders = self._holders.get(h)
            if not holders:
                break
            alive &= holders
            if not alive:
                break
            for engine in alive:
                out[engine] = i + 1
        return out

    def match_mapped(self, mapped: Sequence[int | None], engines: Iterable[str]) -> dict[str, int]:
        """For each of ``engines``, the longest leading run of a prompt's blocks it holds by
        its own hashes: ``mapped`` pairs each of the prompt's blocks with an engine block hash
        (``HashMap.translate``). An engine holding a block holds the blocks before it (it keys
        each block by the chain before it, and evicts a chain from its tail), so the last
        held one counts."""
        out = dict.fromkeys(engines, 0)
        for engine in out:
            blocks = self._engines.get(engine)
            if not blocks:
                continue
            for k in range(len(mapped), 0, -1):
                h = mapped[k - 1]
                if h is not None and (h in blocks or short(h) in blocks):
                    out[engine] = k
                    break
        return out

    def count(self, asked: int, hit: int) -> None:
        """A call was routed: ``asked`` blocks in its prompt, ``hit`` held by its engine."""
        self.lookups += 1
        self.blocks_asked += asked
        self.blocks_hit += hit
        if hit:
            self.hits += 1

    def _drop(self, h: int, engine: str) -> None:
        holders = self._holders.get(h)
        if holders is not None:
            holders.discard(engine)
            if not holders:
                del self._holders[h]
