"""Block hashes of a prompt, computed without a tokenizer.

An engine with prefix caching keys each full KV block by a hash chained over the blocks before
it, so two prompts share cached blocks exactly as far as they share a prefix. The proxy has no
tokenizer; it cuts the prompt's text into pieces of ``block_tokens`` estimated tokens (four
characters a token, as ``proxy.intercept.tokens`` estimates) and chains hashes over those.
The result is an approximation of the engine's blocks: prompts that share text share
hashes as far as they share it, which is what routing needs. The simulated engine hashes its
prompts with this same function, so its KV events name the very hashes the proxy computes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from proxy.intercept.tokens import CHARS_PER_TOKEN, canonical_json, content_text

_SEP_FIELD = "\x1f"
_SEP_MESSAGE = "\x1e"


def prompt_text(body: Mapping[str, Any], *, chat: bool) -> str:
    """The prompt as one string: chat messages framed by role (tool calls included), or a
    completion's prompt. Token-id prompts become their decimal ids."""
    if chat:
        parts = []
        for message in body.get("messages") or ():
            if not isinstance(message, Mapping):
                continue
            text = content_text(message.get("content"))
            if message.get("tool_calls"):
                text += canonical_json(message["tool_calls"]).decode()
            parts.append(f"{message.get('role', '')}{_SEP_FIELD}{text}{_SEP_MESSAGE}")
        return "".join(parts)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        return str(prompt[0])  # a batch: routed by its first prompt
    if isinstance(prompt, list):
        return " ".join(str(t) for t in prompt)
    return ""


def text_blocks(text: str, block_tokens: int) -> tuple[int, ...]:
    """Chained 64-bit hashes of the text's full blocks (a partial last block is not cached
    by engines, so it has no hash)."""
    size = block_tokens * CHARS_PER_TOKEN
    data = text.encode()
    out: list[int] = []
    parent = b"\0" * 8
    for start in range(0, len(data) - size + 1, size):
        digest = hashlib.blake2b(parent + data[start : start + size], digest_size=8).digest()
        out.append(int.from_bytes(digest, "big"))
        parent = digest
    return tuple(out)


def prompt_blocks(body: Mapping[str, Any], *, chat: bool, block_tokens: int) -> tuple[int, ...]:
    return text_blocks(prompt_text(body, chat=chat), block_tokens)
