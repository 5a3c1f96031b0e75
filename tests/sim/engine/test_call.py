"""``SimCall``: what one validated request asks of the engine model and what it says back."""

from __future__ import annotations

import dataclasses

from proxy.sim.engine.call import SimCall
from proxy.sim.engine.text import answer_for
from proxy.sim.engine.tools import ToolCall

ANSWER = answer_for(b"key", length_range=(10, 10))
CALL = SimCall(
    chat=True,
    request_id="r1",
    model="m",
    prompt_tokens=20,
    answer=ANSWER,
    offset=0,
    max_tokens=100,
    ignore_eos=False,
    priority=3,
    stream=False,
    include_usage=False,
    continuous_usage=False,
)
TOOL = ToolCall(id="call_1", name="get_weather", arguments='{"city":"bak"}')


def test_a_text_call_asks_for_the_rest_of_its_answer() -> None:
    assert CALL.response_id == "chatcmpl-r1"
    assert dataclasses.replace(CALL, chat=False).response_id == "cmpl-r1"
    assert CALL.target_tokens == 10
    resumed = dataclasses.replace(CALL, offset=4)
    assert resumed.target_tokens == 6
    assert resumed.answer_text(6) == ANSWER.text(4, 10)
    assert resumed.token_text(6) == ""  # past the natural length: the end-of-sequence
    assert dataclasses.replace(CALL, offset=10).target_tokens == 1
    endless = dataclasses.replace(CALL, ignore_eos=True)
    assert endless.target_tokens is None
    assert endless.token_text(12) == ANSWER.token(12)
    request = CALL.engine_request(arrival=2.5)
    assert (request.id, request.prompt_tokens, request.target_tokens) == ("r1", 20, 10)
    assert (request.max_tokens, request.priority, request.arrival) == (100, 3, 2.5)


def test_a_tool_call_asks_for_its_own_tokens_and_finishes_tool_calls() -> None:
    call = dataclasses.replace(CALL, tool_call=TOOL)
    assert call.target_tokens == TOOL.tokens == 7  # "get_weather" + '{"city":"bak"}': 25 chars
    assert call.engine_request(arrival=0.0).target_tokens == 7
    assert call.finish_reason("stop") == "tool_calls"
    assert call.finish_reason("length") == "length"
    assert call.finish_reason("abort") == "abort"
    assert CALL.finish_reason("stop") == "stop"
    assert dataclasses.replace(call, ignore_eos=True).target_tokens is None
