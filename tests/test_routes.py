from typing import Any

from proxy.intercept.identify import Identifier
from proxy.routes import prompt_tokens_estimate
from proxy.sim.text import chat_prompt_tokens

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
        estimate = prompt_tokens_estimate(body, chat=True, conversation=identity.conversation)
        assert estimate == chat_prompt_tokens(messages, tools=TOOLS)
        reply = {"role": "assistant", "content": f"step {turn} " * 10}
        ident.record_reply(identity, reply)
        messages += [reply, {"role": "user", "content": f"go on {turn}"}]
