"""Requests on the wire: bodies validated into batches of calls as vLLM does."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.errors import BadRequest, ProxyError
from proxy.intercept.tokens import chat_prompt_tokens
from proxy.sim.engine.call import SimBatch, SimCall
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.wire import chat_batch, completion_batch

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
    (call,) = chat_batch(config, orjson.dumps(body), "r1").calls
    return call


def batch(body: dict[str, Any], config: SimEngineConfig = CONFIG, rid: str = "r1") -> SimBatch:
    parse = chat_batch if "messages" in body else completion_batch
    return parse(config, orjson.dumps(body), rid)


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
        (True, {**CHAT, "n": 0}, 400, "n"),
        (True, {**CHAT, "n": 129}, 400, "n"),
        (True, {**CHAT, "stream_options": {"include_usage": True}}, 400, None),
        (True, {**CHAT, "continue_final_message": True}, 400, None),
        (True, {**CHAT, "continue_final_message": True, "add_generation_prompt": False}, 400, None),
        (True, {**CHAT, "max_tokens": 60}, 400, "max_tokens"),
        (True, {**CHAT, "messages": [{"role": "user", "content": "x" * 300}]}, 400, None),
        (False, {"model": MODEL, "prompt": [[1], []]}, 400, "prompt.1"),
        (False, {"model": MODEL}, 400, "prompt"),
        (False, {"model": MODEL, "prompt": 7}, 400, "prompt"),
    ],
)
def test_bad_requests_are_refused_as_vllm_does(
    chat_body: bool, body: Any, status: int, param: str | None
) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    parse = chat_batch if chat_body else completion_batch
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
    assert batch(body).calls[0].tool_call is None


# -- choices, batches, sampling ---------------------------------------------------------------


def test_n_choices_are_calls_of_their_own_sharing_the_prompt() -> None:
    many = batch({**CHAT, "n": 3})
    assert [c.index for c in many.calls] == [0, 1, 2]
    assert [c.engine_id for c in many.calls] == ["r1-0", "r1-1", "r1-2"]
    assert many.prompt_tokens == chat(CHAT).prompt_tokens  # counted once, as vLLM does
    # Greedy (no temperature, or 0): every choice is the same answer.
    assert len({c.answer for c in many.calls}) == 1
    assert batch({**CHAT, "n": 2, "temperature": 0}).calls[1].answer == chat(CHAT).answer
    assert chat(CHAT).engine_id == "r1"  # a lone call keeps the request's id


def test_temperature_varies_answers_by_request_and_choice_unless_seeded() -> None:
    hot = {**CHAT, "temperature": 0.8}
    assert batch(hot, rid="a").calls[0].answer != batch(hot, rid="b").calls[0].answer
    assert batch(hot, rid="a").calls[0].answer == batch(hot, rid="a").calls[0].answer
    seeded = {**hot, "seed": 7, "n": 2}
    first, second = batch(seeded, rid="a").calls
    assert first.answer != second.answer
    assert [c.answer for c in batch(seeded, rid="b").calls] == [first.answer, second.answer]
    cold = {**CHAT, "temperature": 0}
    assert batch(cold, rid="a").calls[0].answer == batch(cold, rid="b").calls[0].answer


def test_a_batch_of_prompts_has_n_choices_per_prompt_in_vllms_order() -> None:
    many = batch({"model": MODEL, "prompt": ["one", "two two two"], "n": 2})
    assert [c.index for c in many.calls] == list(range(4))
    assert [c.engine_id for c in many.calls] == ["r1-0", "r1-1", "r1-2", "r1-3"]
    assert [c.prompt_tokens for c in many.calls] == [1, 1, 3, 3]
    assert many.prompt_tokens == 1 + 3
    assert many.calls[0].answer == many.calls[1].answer != many.calls[2].answer
    ids = batch({"model": MODEL, "prompt": [[5, 6], [7]]})
    assert [c.prompt_tokens for c in ids.calls] == [2, 1]
    assert batch({"model": MODEL, "prompt": [[1, 2]]}).calls[0].solo


def test_empty_null_and_empty_text_prompts_are_answered() -> None:
    empty = batch({"model": MODEL, "prompt": []})
    assert (empty.calls, empty.prompt_tokens) == ((), 0)  # an empty batch, as vLLM reads it
    (default,) = batch({"model": MODEL, "prompt": None}).calls
    assert default.answer == batch({"model": MODEL, "prompt": "<|endoftext|>"}).calls[0].answer
    (blank,) = batch({"model": MODEL, "prompt": ""}).calls
    assert blank.prompt_tokens == 1  # the begin-of-text token


CUSTOM = {"type": "custom", "custom": {"name": "shell", "format": {"type": "text"}}}


def test_custom_tools_are_offered_but_only_functions_are_called() -> None:
    call = chat({**CHAT, "tools": [CUSTOM, WEATHER]})
    assert call.tool_call is not None
    assert call.tool_call.name == "get_weather"
    assert call.prompt_tokens == chat_prompt_tokens(USER, tools=[CUSTOM, WEATHER])
    assert chat({**CHAT, "tools": [CUSTOM]}).tool_call is None
    forced = {"type": "custom", "custom": {"name": "shell"}}
    with pytest.raises(BadRequest) as caught:
        chat({**CHAT, "tools": [CUSTOM], "tool_choice": forced})
    assert caught.value.code == "unsupported_tool_choice"
    with pytest.raises(BadRequest) as caught:
        chat({**CHAT, "tools": [{"type": "custom", "custom": {}}]})
    assert caught.value.param == "tools.0.custom.name"


def test_allowed_tools_narrow_the_choice() -> None:
    allowed = {"mode": "required", "tools": [{"type": "function", "function": {"name": "search"}}]}
    choice = {"type": "allowed_tools", "allowed_tools": allowed}
    call = chat({**CHAT, "tools": [WEATHER, SEARCH], "tool_choice": choice})
    assert call.tool_call is not None
    assert call.tool_call.name == "search"


def _tool(name: str, description: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": description}}


def test_the_tool_called_is_the_one_the_request_is_about() -> None:
    tools = [SEARCH, _tool("get_stock_price", "Share price of a company."), WEATHER]
    assert chat({**CHAT, "tools": tools}).tool_call.name == "get_weather"  # type: ignore[union-attr]
    ask = [{"role": "user", "content": "What is the share price of ACME?"}]
    assert chat({**CHAT, "messages": ask, "tools": tools}).tool_call.name == "get_stock_price"  # type: ignore[union-attr]


def test_without_a_hint_the_tool_is_drawn_per_conversation() -> None:
    tools = [_tool(f"tool_{c}", "") for c in "abc"]
    picked = []
    for i in range(30):
        body = {**CHAT, "messages": [{"role": "user", "content": f"task {i}"}], "tools": tools}
        call = chat(body)
        assert call.tool_call is not None
        assert chat(body).tool_call == call.tool_call  # the same conversation, the same pick
        picked.append(call.tool_call.name)
    assert set(picked) == {"tool_a", "tool_b", "tool_c"}


def test_an_unknown_model_is_typed_as_openai_types_it() -> None:
    with pytest.raises(ProxyError) as caught:
        chat({**CHAT, "model": "gpt-4"})
    error = caught.value.to_dict()["error"]
    assert (caught.value.status, error["type"], error["code"], error["param"]) == (
        404, "invalid_request_error", "model_not_found", "model"
    )  # fmt: skip
