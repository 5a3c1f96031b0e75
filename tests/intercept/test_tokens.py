"""Token estimates of chat and completion requests before the engine has counted them."""

from __future__ import annotations

from typing import Any

from proxy.intercept.identify import Identifier
from proxy.intercept.tokens import (
    canonical_json,
    chat_prompt_tokens,
    content_text,
    estimate_tokens,
    prompt_tokens,
)


def test_token_estimates_and_prompt_counts() -> None:
    assert [estimate_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]
    parts = [{"role": "user", "content": [{"type": "text", "text": "abcdefgh"}]}]
    # begin + (4 framing + 2 text) + generation prompt
    assert chat_prompt_tokens(parts) == 1 + 6 + 4
    assert chat_prompt_tokens(parts, add_generation_prompt=False) == 7
    calls = [{"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "x"}]}]
    assert chat_prompt_tokens(calls) > chat_prompt_tokens([{"role": "assistant"}])
    assert chat_prompt_tokens(parts, tools=[{"type": "function"}]) > chat_prompt_tokens(parts)


def test_content_parts_that_are_not_text_count_by_their_json() -> None:
    image = {"type": "image_url", "image_url": {"url": "x"}}
    assert (
        content_text([{"type": "text", "text": "ab"}, image])
        == "ab" + canonical_json(image).decode()
    )
    assert content_text(None) == ""
    assert canonical_json({"b": 1, "a": 2}) == canonical_json({"a": 2, "b": 1})


def test_prompt_tokens_of_every_prompt_shape() -> None:
    messages = [{"role": "user", "content": "abcdefgh"}]
    assert prompt_tokens({"messages": messages}, chat=True) == chat_prompt_tokens(messages)
    assert prompt_tokens({"prompt": "abcdefgh"}, chat=False) == 2
    assert prompt_tokens({"prompt": [5, 6, 7]}, chat=False) == 3  # token ids count as given
    assert prompt_tokens({"prompt": ["abcd", "abcde"]}, chat=False) == 1 + 2
    assert prompt_tokens({"prompt": [[1, 2], [3]]}, chat=False) == 3
    assert prompt_tokens({}, chat=False) == 0


TOOLS = [{"type": "function", "function": {"name": "read", "parameters": {"type": "object"}}}]


def test_a_continued_conversation_is_estimated_as_a_full_count_would() -> None:
    ident = Identifier()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "be brief " * 30},
        {"role": "user", "content": "read the file"},
    ]
    for turn in range(4):
        body = {"model": "m", "messages": list(messages), "tools": TOOLS}
        identity = ident.identify({}, body)
        assert identity.conversation is not None
        assert identity.conversation.known == (0 if turn == 0 else len(messages) - 2)
        estimate = prompt_tokens(body, chat=True, conversation=identity.conversation)
        assert estimate == chat_prompt_tokens(messages, tools=TOOLS)
        reply = {"role": "assistant", "content": f"step {turn} " * 10}
        ident.record_reply(identity, reply)
        messages += [reply, {"role": "user", "content": f"go on {turn}"}]
