"""From the proxy's block hashes to the engine's: what lets a vLLM's KV events steer calls.

The proxy cuts a prompt's text into blocks of estimated tokens (``proxy.kvhints.blocks``);
vLLM keys blocks of real tokens (``proxy.kvhints.enginehash``). Once a call's prompt has been
tokenized by its engine and hashed the engine's way, each of the proxy's blocks is paired with
the engine block that ends at the same share of the prompt (text block ``k`` of ``n`` with
engine block ``k * m // n`` of ``m``: the prompt's pieces line up by position, as the
estimate of four characters a token holds on average). A later call sharing that text then
asks, per engine, whether the engine still holds the paired block, as its events last said.
Tokenizers differ between models, so pairs are kept per model; each model's pairs are capped,
least recently learned dropped first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class HashMap:
    def __init__(self, capacity: int = 200_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._pairs: dict[str, OrderedDict[int, int]] = {}

    def __len__(self) -> int:
        return sum(len(pairs) for pairs in self._pairs.values())

    def learn(self, model: str, text: Sequence[int], engine: Sequence[int]) -> int:
        """Pair a prompt's text blocks with its engine blocks; how many pairs were learned."""
        n, m = len(text), len(engine)
        if not n or not m:
            return 0
        pairs = self._pairs.setdefault(model, OrderedDict())
        learned = 0
        for k in range(1, n + 1):
            j = k * m // n
            if j < 1:
                continue
            pairs[text[k - 1]] = engine[j - 1]
            pairs.move_to_end(text[k - 1])
            learned += 1
        while len(pairs) > self.capacity:
            pairs.popitem(last=False)
        return learned

    def translate(self, model: str | None, text: Sequence[int]) -> list[int | None]:
        """The engine block paired with each text block (None where none was learned)."""
        pairs = self._pairs.get(model or "")
        if pairs is None:
            return [None] * len(text)
        return [pairs.get(h) for h in text]
