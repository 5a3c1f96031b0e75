"""Real agent clients against the simulated engine: the OpenAI SDK with ``tools=`` and
LangChain's ``bind_tools``, whole and streaming, parse its tool calls and run the loop."""

from __future__ import annotations

import json
import operator
from collections.abc import Iterator
from functools import reduce
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.sim.engine.loopback import MODEL, engine_in_thread

QUESTION = "What will the weather be like in Paris?"
TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather forecast for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "days": {"type": "integer"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "days"],
            },
        },
    }
]


@tool
def get_weather(city: str, days: int) -> str:
    """Weather forecast for a city, for the next few days."""
    return f"Sunny in {city} for {days} days."


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    # Its own loop in a thread: the sync clients below block the calling thread.
    with engine_in_thread(time_scale=0.01) as base:
        yield base


@pytest.fixture
def client(url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def test_openai_sdk_parses_a_whole_tool_call_and_runs_the_loop(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": QUESTION}]
    out = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str)
    assert isinstance(arguments["days"], int)
    assert out.usage is not None
    assert out.usage.completion_tokens > 1
    result = {"role": "tool", "tool_call_id": call.id, "content": "Sunny."}
    messages += [choice.message.model_dump(exclude_none=True), result]
    final = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    assert final.choices[0].finish_reason == "stop"
    assert final.choices[0].message.content
    assert not final.choices[0].message.tool_calls


def test_openai_sdk_streams_a_tool_call(client: openai.OpenAI) -> None:
    messages: Any = [{"role": "user", "content": QUESTION}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS)
    assert whole.choices[0].message.tool_calls is not None
    expected = whole.choices[0].message.tool_calls[0]
    assert expected.type == "function"
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert deltas[0].id == expected.id
    assert deltas[0].function is not None
    assert deltas[0].function.name == "get_weather"
    assert all(d.index == 0 for d in deltas)
    assert len(deltas) > 2
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert json.loads(arguments) == json.loads(expected.function.arguments)
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None
    assert whole.usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # The SDK's own accumulator checks the delta layout strictly.
    with client.chat.completions.stream(model=MODEL, messages=messages, tools=TOOLS) as events:
        final = events.get_final_completion()
    accumulated = final.choices[0].message.tool_calls
    assert accumulated is not None
    assert accumulated[0].function.arguments == expected.function.arguments
    assert final.choices[0].finish_reason == "tool_calls"


def test_langchain_bind_tools_invokes_and_streams(url: str) -> None:
    llm = ChatOpenAI(model=MODEL, base_url=url + "/v1", api_key="unused", max_retries=0)
    bound = llm.bind_tools([get_weather])
    asked = bound.invoke(QUESTION)
    assert isinstance(asked, AIMessage)
    assert asked.invalid_tool_calls == []
    (call,) = asked.tool_calls
    assert call["name"] == "get_weather"
    assert isinstance(call["args"]["city"], str)
    assert isinstance(call["args"]["days"], int)
    result = get_weather.invoke(call)
    answered = bound.invoke([HumanMessage(QUESTION), asked, result])
    assert isinstance(answered, AIMessage)
    assert answered.tool_calls == []
    assert isinstance(answered.content, str)
    assert answered.content
    streamed = list(bound.stream(QUESTION))
    chunks = [c for c in streamed if isinstance(c, AIMessageChunk)]
    assert len(chunks) == len(streamed)
    total = reduce(operator.add, chunks)
    assert isinstance(total, AIMessageChunk)
    assert len([c for c in chunks if c.tool_call_chunks]) > 2
    assert total.tool_call_chunks[0]["name"] == "get_weather"
    assert total.tool_calls == asked.tool_calls
    assert total.response_metadata["finish_reason"] == "tool_calls"
