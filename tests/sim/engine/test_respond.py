"""Answers on the wire: stream chunks and whole bodies, as vLLM lays them out."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.sim.engine.call import SimBatch, SimCall
from proxy.sim.engine.respond import DONE, stream_end, stream_event, whole_body
from proxy.sim.engine.text import count_words
from tests.sim.engine.test_wire import CHAT, MODEL, WEATHER, batch, chat


def alone(call: SimCall) -> SimBatch:
    """The batch of a request whose only call is ``call``."""
    return SimBatch(
        chat=call.chat, request_id=call.request_id, model=call.model, stream=call.stream,
        include_usage=call.include_usage, calls=(call,), prompt_tokens=call.prompt_tokens,
    )  # fmt: skip


def events(raw: bytes) -> list[Any]:
    """SSE bytes as a list of JSON chunks (and "[DONE]")."""
    assert raw.endswith(b"\n\n")
    out: list[Any] = []
    for event in raw.split(b"\n\n")[:-1]:
        assert event.startswith(b"data: ")
        payload = event[len(b"data: ") :]
        out.append("[DONE]" if payload == b"[DONE]" else orjson.loads(payload))
    return out


def run_stream(call: SimCall, steps: list[tuple[int, str | None]]) -> list[Any]:
    """The chunks a stream sends for these engine events, then its end."""
    raw, sent = b"", 0
    for tokens, reason in steps:
        raw += stream_event(call, 1, sent, tokens, reason)
        sent += tokens
    return events(raw + stream_end(alone(call), 1, [sent]))


def generated(call: SimCall, reason: str = "stop") -> list[tuple[int, str | None]]:
    """The engine events of a call that generates all its target tokens."""
    assert call.target_tokens is not None
    return [(1, None)] * (call.target_tokens - 1) + [(1, reason)]


# -- responses -----------------------------------------------------------------------------


def test_a_text_stream_sends_the_role_then_a_chunk_per_token() -> None:
    call = chat({**CHAT, "max_tokens": 3, "stream": True})
    chunks = run_stream(call, [(1, None), (1, None), (1, "length")])
    assert chunks[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    deltas = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert "".join(deltas) == call.answer_text(3)
    assert [count_words(d) for d in deltas] == [1, 1, 1]
    last = chunks[-2]["choices"][0]
    assert (last["finish_reason"], last["stop_reason"]) == ("length", None)
    assert stream_event(call, 1, 0, 0, None) == b""


def test_a_tool_call_streams_in_openai_deltas() -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    call = chat({**body, "tools": [WEATHER]})
    tool = call.tool_call
    assert tool is not None
    chunks = run_stream(call, generated(call))
    assert chunks[-1] == "[DONE]"
    assert chunks[-2]["choices"] == []
    assert chunks[-2]["usage"]["completion_tokens"] == tool.tokens
    choices = [c["choices"][0] for c in chunks[:-2]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks[:-1])
    assert choices[0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert choices[1]["delta"] == {
        "tool_calls": [
            {
                "index": 0,
                "id": tool.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    pieces = choices[2:-1]
    assert 1 < len(pieces) <= tool.tokens
    for piece in pieces:
        assert piece["finish_reason"] is None
        assert list(piece["delta"]) == ["tool_calls"]
        (delta,) = piece["delta"]["tool_calls"]
        assert list(delta) == ["index", "function"]
        assert list(delta["function"]) == ["arguments"]
    arguments = "".join(p["delta"]["tool_calls"][0]["function"]["arguments"] for p in pieces)
    assert arguments == tool.arguments
    assert orjson.loads(arguments)["city"]
    assert choices[-1] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "tool_calls",
        "stop_reason": None,
    }


def test_a_tool_call_cut_short_keeps_its_reason_and_partial_arguments() -> None:
    call = chat({**CHAT, "tools": [WEATHER], "max_tokens": 2, "stream": True})
    chunks = run_stream(call, [(1, None), (1, "length")])
    assert call.tool_call is not None
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    pieces = [c["choices"][0]["delta"]["tool_calls"][0]["function"] for c in chunks[2:-2]]
    assert "".join(p["arguments"] for p in pieces) == call.tool_call.arguments_upto(2)
    whole = whole_body(alone(call), 1, [2], ["length"])["choices"][0]
    assert whole["finish_reason"] == "length"
    written = whole["message"]["tool_calls"][0]["function"]["arguments"]
    assert written == pieces[0]["arguments"] + pieces[1]["arguments"]


def test_continuous_usage_is_on_every_chunk_of_a_tool_call_but_the_role() -> None:
    options = {"continuous_usage_stats": True}
    call = chat({**CHAT, "tools": [WEATHER], "stream": True, "stream_options": options})
    chunks = run_stream(call, generated(call))[:-1]
    assert "usage" not in chunks[0]
    counts = [c["usage"]["completion_tokens"] for c in chunks[1:]]
    assert counts[0] == 1
    assert counts == sorted(counts)
    assert counts[-1] == call.target_tokens


def test_an_abort_before_the_first_token_ends_a_tool_stream_cleanly() -> None:
    call = chat({**CHAT, "tools": [WEATHER], "stream": True})
    chunks = run_stream(call, [(0, "abort")])
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": "", "refusal": None},
        {},
    ]
    assert chunks[1]["choices"][0]["finish_reason"] == "abort"
    message = whole_body(alone(call), 1, [0], ["abort"])["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "", "refusal": None, "tool_calls": []}


def test_whole_answers_hold_the_tool_call_or_the_text() -> None:
    call = chat({**CHAT, "tools": [WEATHER]})
    tool = call.tool_call
    assert tool is not None
    body = whole_body(alone(call), 7, [tool.tokens], ["stop"])
    assert body["object"] == "chat.completion"
    assert body["created"] == 7
    assert body["choices"][0] == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": None,
            "refusal": None,
            "tool_calls": [
                {
                    "id": tool.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": tool.arguments},
                }
            ],
        },
        "logprobs": None,
        "finish_reason": "tool_calls",
        "stop_reason": None,
    }
    assert body["usage"]["completion_tokens"] == tool.tokens
    text = whole_body(alone(chat(CHAT)), 7, [4], ["length"])["choices"][0]
    assert text["message"]["content"] == chat(CHAT).answer_text(4)
    assert text["finish_reason"] == "length"


def test_completion_shapes() -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "stream": True}
    (call,) = batch({**body, "max_tokens": 2}).calls
    chunks = run_stream(call, [(1, None), (1, "length")])
    assert chunks[0]["id"] == "cmpl-r1"
    assert [c["object"] for c in chunks[:-1]] == ["text_completion"] * 2
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == call.answer_text(2)
    whole = whole_body(alone(call), 1, [2], ["length"])
    assert whole["choices"][0]["text"] == call.answer_text(2)
    assert stream_end(alone(call), 1, [2]) == DONE


def test_choices_of_a_batch_stream_under_their_own_index_and_sum_their_usage() -> None:
    many = batch({"model": MODEL, "prompt": ["a", "b"], "n": 2, "max_tokens": 2, "stream": True,
                  "stream_options": {"include_usage": True}})  # fmt: skip
    raw = b"".join(stream_event(c, 1, 0, 2, "length") for c in many.calls)
    chunks = events(raw + stream_end(many, 1, [2] * 4))
    assert [c["choices"][0]["index"] for c in chunks[:4]] == [0, 1, 2, 3]
    assert {c["id"] for c in chunks[:-1]} == {"cmpl-r1"}
    assert chunks[4]["usage"] == {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10}
    whole = whole_body(many, 1, [2, 1, 2, 2], ["length", "stop", "length", "length"])
    assert [c["index"] for c in whole["choices"]] == [0, 1, 2, 3]
    assert whole["choices"][1]["finish_reason"] == "stop"
    assert whole["usage"]["completion_tokens"] == 7


def test_an_empty_batch_answers_no_choices() -> None:
    empty = batch({"model": MODEL, "prompt": [], "stream": True,
                   "stream_options": {"include_usage": True}})  # fmt: skip
    chunks = events(stream_end(empty, 1, []))
    assert chunks[0]["choices"] == []
    assert chunks[0]["usage"]["total_tokens"] == 0
    assert whole_body(empty, 1, [], [])["choices"] == []


def test_chat_choices_carry_a_null_refusal() -> None:
    many = batch({**CHAT, "n": 2})
    for choice in whole_body(many, 1, [1, 1], ["length", "length"])["choices"]:
        assert choice["message"]["refusal"] is None
