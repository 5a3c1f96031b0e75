"""What the simulated model says: deterministic answers.

There is no tokenizer. Prompts are counted as the live proxy estimates them
(``proxy.intercept.tokens``: about four characters per token). Answers are made of
pseudo-words, one per token, each a space and three letters (four characters: the heuristic
counts them exactly). Token ``i`` of an answer depends only on the answer's key and ``i``, so
any suffix of an answer can be produced without the prefix; that is what makes an aborted call
resumable exactly (``continue_final_message``).

Turning a request body into a call is ``wire``'s business; what the model does with tools is
``tools``'.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.intercept.tokens import canonical_json, content_text

_CONSONANTS = "bcdfghjklmnprstvz"
_VOWELS = "aeiou"
VOCABULARY = tuple(
    f" {a}{v}{b}" for a in _CONSONANTS for v in _VOWELS for b in _CONSONANTS
)  # 1,445 words

_MASK = (1 << 64) - 1


def _mix(x: int) -> int:
    # splitmix64's finaliser: cheap, and consecutive inputs give unrelated outputs.
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def count_words(text: str) -> int:
    """Tokens of a text the simulated model wrote itself: one per whitespace-separated word."""
    return len(text.split())


@dataclass(frozen=True, slots=True)
class Answer:
    """The answer the simulated model gives to one key: a token stream and its natural length
    (the token count after which it stops on its own, unless ``ignore_eos``)."""

    seed: int
    natural_length: int

    def token(self, i: int) -> str:
        """Text of token ``i`` (0-based), independent of every other token."""
        return VOCABULARY[_mix((self.seed + i) & _MASK) % len(VOCABULARY)]

    def text(self, start: int, stop: int) -> str:
        """Tokens ``start`` (inclusive) to ``stop`` (exclusive), joined."""
        return "".join(self.token(i) for i in range(start, stop))

    def word(self, i: int) -> str:
        """Token ``i`` without its leading space: a value the model can put in a tool call."""
        return self.token(i).strip()

    def draw(self, salt: int) -> int:
        """A 64-bit number fixed by the answer and ``salt``, for choices other than words."""
        return _mix(self.seed ^ (salt & _MASK))


def answer_for(key: bytes, *, seed: int = 0, length_range: tuple[int, int] = (32, 512)) -> Answer:
    """The deterministic answer for ``key`` (canonical JSON of the chat messages, or of the
    completion prompt); its natural length is drawn from ``length_range``, both ends included."""
    low, high = length_range
    if not 1 <= low <= high:
        raise ValueError("length_range must be (low, high) with 1 <= low <= high")
    digest = hashlib.blake2b(key, digest_size=8, salt=seed.to_bytes(16, "little", signed=True))
    answer_seed = int.from_bytes(digest.digest(), "little")
    length = low + _mix(answer_seed ^ 0x5EED) % (high - low + 1)
    return Answer(seed=answer_seed, natural_length=length)


def chat_answer_key(
    messages: Sequence[Mapping[str, Any]], *, continue_final_message: bool
) -> tuple[bytes, int]:
    """The answer key of a chat request and how many of the answer's tokens are already given.

    A request that continues a final assistant message asks for the rest of the answer to the
    messages before it: the key leaves that message out, and its text counts as the first
    ``k`` tokens. A proxy that aborted a call and resumes it with the partial answer therefore
    gets exactly the tokens the uninterrupted call would have produced.
    """
    if continue_final_message and messages and messages[-1].get("role") == "assistant":
        done = count_words(content_text(messages[-1].get("content")))
        return canonical_json(list(messages[:-1])), done
    return canonical_json(list(messages)), 0
