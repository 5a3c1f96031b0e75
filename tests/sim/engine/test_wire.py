"""The wire format: request bodies validated into calls as vLLM does, and response shapes."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.errors import BadRequest, ProxyError
from proxy.intercept.tokens import chat_prompt_tokens
from proxy.sim.engine.call import SimCall
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.text import count_words
from proxy.sim.engine.wire import (
    DONE,
    chat_call,
    completion_call,
    stream_end,
    stream_event,
    whole_body,
)

MODEL = "sim-llama-3.1-8b"
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
CHAT = {"model": MODEL, "messages": USER}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {"name": "search", "parameters": {"properties": {"q": {"type": "string"}}}},
}
CONFIG = SimEngineConfig()
SMALL = SimEngineConfig(max_model_len=64)


def chat(body: dict[str, Any], config: SimEngineConfig = CONFIG) -> SimCall:
    return chat_call(config, orjson.dumps(body), "r1")


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
    return events(raw + stream_end(call, 1, sent))


def generated(call: SimCall, reason: str = "stop") -> list[tuple[int, str | None]]:
    """The engine events of a call that generates all its target tokens."""
    assert call.target_tokens is not None
    return [(1, None)] * (call.target_tokens - 1) + [(1, reason)]


# -- requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chat_body", "body", "status", "param"),
    [
        (True, b"{not json", 400, None),
        (True, b"[1, 2]", 400, None),
        (True, {**CHAT, "max_tokens": "5"}, 400, "max_tokens"),
        (True, {**CHAT, "max_tokens": 0}, 400, "max_tokens"),
        (True, {**CHAT, "stream": "yes"}, 400, "stream"),
        (True, {"model": MODEL, "messages": []}, 400, "messages"),
        (True, {"model": MODEL, "messages": [{"content": "x"}]}, 400, None),
        (True, {**CHAT, "model": "gpt-4"}, 404, "model"),
        (True, {**CHAT, "n": 2}, 400, "n"),
        (True, {**CHAT, "stream_options": {"include_usage": True}}, 400, None),
        (True, {**CHAT, "continue_final_message": True}, 400, None),
        (True, {**CHAT, "continue_final_message": True, "add_generation_prompt": False}, 400, None),
        (True, {**CHAT, "max_tokens": 60}, 400, "max_tokens"),
        (True, {**CHAT, "messages": [{"role": "user", "content": "x" * 300}]}, 400, None),
        (False, {"model": MODEL, "prompt": ["a", "b"]}, 400, "prompt"),
        (False, {"model": MODEL, "prompt": ""}, 400, "prompt"),
        (False, {"model": MODEL, "prompt": 7}, 400, "prompt"),
    ],
)
def test_bad_requests_are_refused_as_vllm_does(
    chat_body: bool, body: Any, status: int, param: str | None
) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    parse = chat_call if chat_body else completion_call
    with pytest.raises(ProxyError) as caught:
        parse(SMALL, raw, "r1")
    assert caught.value.status == status
    assert caught.value.message
    if param is not None:
        assert caught.value.param == param


@pytest.mark.parametrize(
    ("tools", "param"),
    [
        ("get_weather", "tools"),
        (["get_weather"], "tools.0"),
        ([{"function": {"name": "f"}}], "tools.0.type"),
        ([{"type": "retrieval", "function": {"name": "f"}}], "tools.0.type"),
        ([{"type": "function"}], "tools.0.function"),
        ([WEATHER, {"type": "function", "function": {"name": 3}}], "tools.1.function.name"),
        ([{"type": "function", "function": {"description": "no name"}}], "tools.0.function.name"),
        ([{"type": "function", "function": {"name": "f", "parameters": []}}], "tools.0.function.parameters"),
    ],
)  # fmt: skip
def test_bad_tools_are_refused_naming_the_field(tools: Any, param: str) -> None:
    with pytest.raises(BadRequest) as caught:
        chat({**CHAT, "tools": tools})
    assert caught.value.param == param
    assert param in caught.value.message


def test_bad_tool_choice_is_refused() -> None:
    for choice in (5, "sometimes", {"type": "function", "function": {"name": "nope"}}):
        with pytest.raises(BadRequest) as caught:
            chat({**CHAT, "tools": [WEATHER], "tool_choice": choice})
        assert caught.value.param == "tool_choice"
    with pytest.raises(BadRequest, match="tools"):
        chat({**CHAT, "tool_choice": "required"})


def test_a_user_question_with_tools_gets_a_tool_call_of_the_first_tool() -> None:
    call = chat({**CHAT, "tools": [WEATHER, SEARCH]})
    tool = call.tool_call
    assert tool is not None
    assert tool.name == "get_weather"
    assert list(orjson.loads(tool.arguments)) == ["city"]  # only the required property
    assert call.target_tokens == tool.tokens
    assert call.engine_request(arrival=0.0).target_tokens == tool.tokens
    assert call.prompt_tokens == chat_prompt_tokens(USER, tools=[WEATHER, SEARCH])
    assert call.prompt_tokens > chat({**CHAT}).prompt_tokens
    assert chat({**CHAT, "tools": [WEATHER, SEARCH]}).tool_call == tool  # deterministic


def test_tool_choice_picks_the_call_or_none() -> None:
    named = {"type": "function", "function": {"name": "search"}}
    picked = chat({**CHAT, "tools": [WEATHER, SEARCH], "tool_choice": named}).tool_call
    assert picked is not None
    assert picked.name == "search"
    assert list(orjson.loads(picked.arguments)) == ["q"]
    assert chat({**CHAT, "tools": [WEATHER], "tool_choice": "none"}).tool_call is None
    assert chat({**CHAT, "tools": []}).tool_call is None
    assert chat(CHAT).tool_call is None


def test_a_tool_result_gets_text_unless_a_call_is_required() -> None:
    first = chat({**CHAT, "tools": [WEATHER]}).tool_call
    assert first is not None
    function = {"name": first.name, "arguments": first.arguments}
    calls = [{"id": first.id, "type": "function", "function": function}]
    loop = [
        *USER,
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": first.id, "content": "sunny, 21 C"},
    ]
    after = chat({**CHAT, "messages": loop, "tools": [WEATHER]})
    assert after.tool_call is None
    assert after.target_tokens == after.answer.natural_length
    again = chat({**CHAT, "messages": loop, "tools": [WEATHER], "tool_choice": "required"})
    assert again.tool_call is not None
    assert again.tool_call.id != first.id  # another conversation, another call id


def test_completions_never_call_tools() -> None:
    body = {"model": MODEL, "prompt": "hi", "tools": [WEATHER]}
    assert completion_call(CONFIG, orjson.dumps(body), "r1").tool_call is None


# -- responses -----------------------------------------------------------------------------


def test_a_text_stream_sends_the_role_then_a_chunk_per_token() -> None:
    call = chat({**CHAT, "max_tokens": 3, "stream": True})
    chunks = run_stream(call, [(1, None), (1, None), (1, "length")])
    assert chunks[-1] == "[DONE]"
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
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
    assert choices[0]["delta"] == {"role": "assistant", "content": ""}
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
    whole = whole_body(call, 1, 2, "length")["choices"][0]
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
        {"role": "assistant", "content": ""},
        {},
    ]
    assert chunks[1]["choices"][0]["finish_reason"] == "abort"
    message = whole_body(call, 1, 0, "abort")["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "", "tool_calls": []}


def test_whole_answers_hold_the_tool_call_or_the_text() -> None:
    call = chat({**CHAT, "tools": [WEATHER]})
    tool = call.tool_call
    assert tool is not None
    body = whole_body(call, 7, tool.tokens, "stop")
    assert body["object"] == "chat.completion"
    assert body["created"] == 7
    assert body["choices"][0] == {
        "index": 0,
        "message": {
            "role": "assistant",
            "content": None,
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
    text = whole_body(chat(CHAT), 7, 4, "length")["choices"][0]
    assert text["message"]["content"] == chat(CHAT).answer_text(4)
    assert text["finish_reason"] == "length"


def test_completion_shapes() -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "stream": True}
    call = completion_call(CONFIG, orjson.dumps({**body, "max_tokens": 2}), "r1")
    chunks = run_stream(call, [(1, None), (1, "length")])
    assert chunks[0]["id"] == "cmpl-r1"
    assert [c["object"] for c in chunks[:-1]] == ["text_completion"] * 2
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == call.answer_text(2)
    whole = whole_body(call, 1, 2, "length")
    assert whole["choices"][0]["text"] == call.answer_text(2)
    assert stream_end(call, 1, 2) == DONE
