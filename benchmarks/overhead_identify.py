"""An agent conversation for ``bench_overhead.py``'s identification timing: calls 1..N-1 are
identified and their replies recorded as the proxy does; call N is then timed alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from proxy.intercept.identify import Identifier, Identity
from proxy.intercept.tokens import prompt_tokens
from proxy.intercept.wire import ChatCompletionRequest, validate


def prepare(
    identifier: Identifier, headers: Mapping[str, str], body: dict[str, Any], raw: bytes
) -> Identity:
    """What ``routes.generation`` does with a parsed chat body before the call is scheduled."""
    identity = identifier.identify(headers, body, raw)
    conversation = identity.conversation
    known = conversation.known if conversation is not None else 0
    validate(ChatCompletionRequest, body, known_messages=known)
    prompt_tokens(body, chat=True, conversation=conversation)
    return identity


def _reply(i: int) -> dict[str, Any]:
    if i % 2:
        return {"role": "assistant", "content": f"Step {i}: I read the file and it says " * 4}
    arguments = orjson.dumps({"path": f"src/module_{i}.py", "start": i, "end": i + 40})
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": "read_file", "arguments": arguments.decode()},
            }
        ],
    }


def start_conversation(calls: int) -> tuple[Identifier, bytes, int]:
    """The identifier after calls 1..calls-1, the raw body of call ``calls`` and its length
    in messages."""
    from multidict import CIMultiDict

    headers = CIMultiDict({"Authorization": "Bearer sk-bench"})
    identifier = Identifier()
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a coding agent. " * 40},
        {"role": "user", "content": "Fix the failing test in the repository, please."},
    ]
    for i in range(1, calls):
        raw = orjson.dumps({"model": "m", "messages": messages, "stream": True})
        identity = prepare(identifier, headers, orjson.loads(raw), raw)
        reply = _reply(i)
        identifier.record_reply(identity, reply)
        messages = [*messages, reply]
        if reply.get("tool_calls"):
            messages.append(
                {"role": "tool", "tool_call_id": f"call_{i}", "content": f"line {i}\n" * 20}
            )
        else:
            messages.append({"role": "user", "content": "Go on."})
    raw = orjson.dumps({"model": "m", "messages": messages, "stream": True})
    return identifier, raw, len(messages)
