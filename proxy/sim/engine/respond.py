"""The simulated engine's answers on the wire: SSE chunks of a stream, or the whole
``chat.completion`` / ``text_completion`` object, laid out as vLLM sends them and as OpenAI's
API description declares them (a chat message carries ``refusal: null``; every choice has its
own ``index``). A request of several choices (``n`` > 1, a batch of prompts) interleaves their
chunks in one stream and sums their usage. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from proxy.sim.engine.call import SimBatch, SimCall
from proxy.sim.engine.tools import ToolCall

DONE = b"data: [DONE]\n\n"


def usage(call: SimCall, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": call.prompt_tokens + completion,
    }


def batch_usage(batch: SimBatch, sent: Sequence[int]) -> dict[str, int]:
    completion = sum(sent)
    return {
        "prompt_tokens": batch.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": batch.prompt_tokens + completion,
    }


def chunk(call: SimCall | SimBatch, created: int, choices: list[Any], usage: Any = None) -> bytes:
    """One SSE event of a stream."""
    body: dict[str, Any] = {
        "id": call.response_id,
        "object": "chat.completion.chunk" if call.chat else "text_completion",
        "created": created,
        "model": call.model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _choice(call: SimCall, content: dict[str, Any] | str, reason: str | None) -> dict[str, Any]:
    # ``content`` is a chat delta, or a completion's text.
    choice: dict[str, Any] = {"index": call.index, "delta" if call.chat else "text": content}
    choice["logprobs"] = None
    choice["finish_reason"] = reason
    if reason is not None:
        choice["stop_reason"] = None
    return choice


def _tool_chunks(
    call: SimCall, tool: ToolCall, created: int, sent: int, done: int, reason: str | None
) -> bytes:
    # OpenAI's layout: a delta naming the call (id, type, name, empty arguments), then deltas
    # carrying pieces of the arguments, then a finish chunk with an empty delta.
    out = bytearray()
    use = usage(call, done) if call.continuous_usage else None
    if sent == 0 < done:
        function = {"name": tool.name, "arguments": ""}
        opening = {"index": 0, "id": tool.id, "type": "function", "function": function}
        out += chunk(call, created, [_choice(call, {"tool_calls": [opening]}, None)], use)
    piece = "".join(tool.piece(i) for i in range(sent, done))
    if piece:
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
        out += chunk(call, created, [_choice(call, delta, None)], use)
    if reason is not None:
        out += chunk(call, created, [_choice(call, {}, call.finish_reason(reason))], use)
    return bytes(out)


def stream_event(call: SimCall, created: int, sent: int, tokens: int, reason: str | None) -> bytes:
    """The SSE chunks for one event of the engine: ``tokens`` new tokens after the ``sent``
    ones, and the finish reason if the request has ended (``None`` while it runs)."""
    if not tokens and reason is None:
        return b""
    out = bytearray()
    if call.chat and sent == 0:  # vLLM sends the role first, with the first token
        role = {"role": "assistant", "content": "", "refusal": None}
        out += chunk(call, created, [_choice(call, role, None)])
    done = sent + tokens
    if call.tool_call is not None:
        return bytes(out) + _tool_chunks(call, call.tool_call, created, sent, done, reason)
    text = "".join(call.token_text(i) for i in range(sent, done))
    use = usage(call, done) if call.continuous_usage else None
    content = {"content": text} if call.chat else text
    out += chunk(call, created, [_choice(call, content, reason)], use)
    return bytes(out)


def stream_end(batch: SimBatch, created: int, sent: Sequence[int]) -> bytes:
    """What follows the last finish: the usage chunk if the client asked for it (all choices
    together), then ``[DONE]``."""
    tail = chunk(batch, created, [], batch_usage(batch, sent)) if batch.include_usage else b""
    return tail + DONE


def _whole_choice(call: SimCall, sent: int, reason: str) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": call.index}
    tool = call.tool_call
    if not call.chat:
        choice["text"] = call.answer_text(sent)
    elif tool is not None and sent:
        function = {"name": tool.name, "arguments": tool.arguments_upto(sent)}
        choice["message"] = {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [{"id": tool.id, "type": "function", "function": function}],
        }
    else:
        text = call.answer_text(sent)
        choice["message"] = {
            "role": "assistant",
            "content": text,
            "refusal": None,
            "tool_calls": [],
        }
    choice.update(logprobs=None, finish_reason=call.finish_reason(reason), stop_reason=None)
    return choice


def whole_body(
    batch: SimBatch, created: int, sent: Sequence[int], reasons: Sequence[str]
) -> dict[str, Any]:
    """The ``chat.completion`` or ``text_completion`` object of a request whose calls
    generated ``sent`` tokens each and finished for ``reasons``."""
    choices = [
        _whole_choice(call, n, reason)
        for call, n, reason in zip(batch.calls, sent, reasons, strict=True)
    ]
    return {
        "id": batch.response_id,
        "object": "chat.completion" if batch.chat else "text_completion",
        "created": created,
        "model": batch.model,
        "choices": choices,
        "usage": batch_usage(batch, sent),
    }
