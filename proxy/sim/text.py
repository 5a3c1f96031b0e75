"""What the simulated model reads and says: token counts and deterministic answers.

There is no tokenizer. Prompts are counted by a cheap heuristic (about four characters per
token, the usual figure for English under Llama-3's 128k BPE vocabulary). Answers are made of
pseudo-words, one per token, each a space and three letters (four characters: the heuristic
counts them exactly). Token ``i`` of an answer depends only on the answer's key and ``i``, so
any suffix of an answer can be produced without the prefix; that is what makes an aborted call
resumable exactly (``continue_final_message``).

Turning a request body into a call is ``wire``'s business; what the model does with tools is
``tools``'.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

CHARS_PER_TOKEN = 4
# Llama-3 chat template: <|begin_of_text|> once; per message <|start_header_id|>, the role,
# <|end_header_id|>, "\n\n" and <|eot_id|>; and the same header again as the generation prompt.
BEGIN_TOKENS = 1
MESSAGE_OVERHEAD_TOKENS = 4
GENERATION_PROMPT_TOKENS = 4

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


def estimate_tokens(text: str) -> int:
    """Tokens in ``text``: one per four characters, rounded up; 0 only for empty text."""
    return -(-len(text) // CHARS_PER_TOKEN)


def count_words(text: str) -> int:
    """Tokens of a text the simulated model wrote itself: one per whitespace-separated word."""
    return len(text.split())


def content_text(content: Any) -> str:
    """The text of a message ``content``: a string, or the text of a list of content parts
    (other parts, e.g. images, are counted by their JSON size)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        pieces = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                pieces.append(part["text"])
            else:
                pieces.append(canonical_json(part).decode())
        return "".join(pieces)
    return canonical_json(content).decode()


def message_tokens(message: Mapping[str, Any]) -> int:
    """Tokens one chat message adds to the prompt: its text, tool calls, name and framing."""
    tokens = MESSAGE_OVERHEAD_TOKENS + estimate_tokens(content_text(message.get("content")))
    if message.get("tool_calls"):
        tokens += estimate_tokens(canonical_json(message["tool_calls"]).decode())
    for key in ("name", "tool_call_id"):
        value = message.get(key)
        if isinstance(value, str):
            tokens += estimate_tokens(value)
    return tokens


def chat_prompt_tokens(
    messages: Sequence[Mapping[str, Any]],
    *,
    tools: Iterable[Any] | None = None,
    add_generation_prompt: bool = True,
) -> int:
    """Prompt tokens of a chat request as the Llama-3 template would lay it out."""
    tokens = BEGIN_TOKENS + sum(message_tokens(m) for m in messages)
    if tools:
        tokens += estimate_tokens(canonical_json(list(tools)).decode())
    if add_generation_prompt:
        tokens += GENERATION_PROMPT_TOKENS
    return tokens


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys: equal values give equal bytes, whatever the client's key order."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers past 64 bits, which JSON allows: the standard library's
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


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
