"""Token estimates of a request before any engine has counted it.

There is no tokenizer: a text counts one token per four characters, rounded up (the usual
figure for English under Llama-3's 128k BPE vocabulary), and a chat request adds the framing
tokens of the Llama-3 template. The proxy ranks a call by this estimate until the engine reports
its usage; the simulated engine counts prompts the same way, so that in the simulator and in
end-to-end tests the estimate and the engine's figure agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from proxy.intercept.prefix import Conversation

CHARS_PER_TOKEN = 4
# Llama-3 chat template: <|begin_of_text|> once; per message <|start_header_id|>, the role,
# <|end_header_id|>, "\n\n" and <|eot_id|>; and the same header again as the generation prompt.
BEGIN_TOKENS = 1
MESSAGE_OVERHEAD_TOKENS = 4
GENERATION_PROMPT_TOKENS = 4


def estimate_tokens(text: str) -> int:
    """Tokens in ``text``: one per four characters, rounded up; 0 only for empty text."""
    return -(-len(text) // CHARS_PER_TOKEN)


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys: equal values give equal bytes, whatever the client's key order."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers past 64 bits, which JSON allows: the standard library's
        return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


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


def prompt_tokens(
    body: Mapping[str, Any], *, chat: bool, conversation: Conversation | None = None
) -> int:
    """The prompt's size before the engine says: the same heuristic as the simulated engine
    (``chat_prompt_tokens``). A conversation that continues one seen before is counted from
    that one's figure over its new messages only, and its tools, if they are the same, are
    not counted again; the figures are kept on ``conversation`` for the next call."""
    if chat:
        messages, tools = body["messages"], body.get("tools")
        start, tokens = 0, 0
        if conversation is not None and conversation.known_tokens is not None:
            start, tokens = conversation.known, conversation.known_tokens
        for i in range(start, len(messages)):
            tokens += message_tokens(messages[i])
        if not tools:
            tools_tokens = 0
        elif conversation is not None and conversation.tools == tools:
            tools_tokens = conversation.tools_tokens
        else:
            tools_tokens = estimate_tokens(canonical_json(list(tools)).decode())
        if conversation is not None:
            conversation.tokens, conversation.tools = tokens, tools
            conversation.tools_tokens = tools_tokens
        return BEGIN_TOKENS + tokens + tools_tokens + GENERATION_PROMPT_TOKENS
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return estimate_tokens(prompt)
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], int | float):
        return len(prompt)  # token ids
    return sum(estimate_tokens(p) if isinstance(p, str) else len(p) for p in prompt or ())
