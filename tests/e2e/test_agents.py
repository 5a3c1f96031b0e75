"""Real LangChain agents with tool calls, sending no identifying header: the proxy groups each
agent's calls into one program by inference, and keeps concurrent agents apart."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.e2e.servers import ServerThread

pytestmark = pytest.mark.e2e

MODEL = "sim-llama-3.1-8b"
TURNS = 3


@tool
def weather(city: str) -> str:
    """Look up today's weather in a city."""
    return f"It is sunny in {city}."


async def agent(url: str, name: str) -> int:
    """A ReAct-style loop: each user turn makes the model call the tool, then answer; then the
    user asks a follow-up. Returns the number of LLM calls made."""
    llm = ChatOpenAI(
        base_url=url + "/v1", api_key="unused", model=MODEL, max_tokens=12, max_retries=0
    )  # type: ignore[arg-type]
    bound = llm.bind_tools([weather])
    messages: list[BaseMessage] = [
        SystemMessage(f"You are travel agent {name}."),
        HumanMessage("Plan my day in Lisbon."),
    ]
    calls = 0
    for turn in range(TURNS):
        reply = await bound.ainvoke(messages)
        calls += 1
        messages.append(reply)
        assert reply.tool_calls, "the simulated model calls the tool after a user turn"  # type: ignore[attr-defined]
        for call in reply.tool_calls:  # type: ignore[attr-defined]
            messages.append(ToolMessage(weather.invoke(call["args"]), tool_call_id=call["id"]))
        answer = await bound.ainvoke(messages)
        calls += 1
        assert not answer.tool_calls  # type: ignore[attr-defined]
        messages.append(answer)
        messages.append(HumanMessage(f"Thanks. Follow-up question {turn}?"))
    return calls


def _programs(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(url + "/v1/programs?limit=100") as resp:
        return json.load(resp)["data"]  # type: ignore[no-any-return]


def test_concurrent_langchain_agents_are_two_programs(
    proxy_server: ServerThread, proxy_url: str
) -> None:
    before = {p["id"] for p in _programs(proxy_url)}

    async def both() -> list[int]:
        return list(await asyncio.gather(agent(proxy_url, "A"), agent(proxy_url, "B")))

    counts = asyncio.run(both())
    programs = [p for p in _programs(proxy_url) if p["id"] not in before]
    assert counts == [2 * TURNS, 2 * TURNS]
    assert len(programs) == 2, [(p["id"], p["calls"]) for p in programs]
    assert sorted(p["calls"] for p in programs) == [2 * TURNS, 2 * TURNS]
    assert {p["identified_by"] for p in programs} == {"new"}  # created by the first call...
    assert all(p["completion_tokens"] > 0 and p["service"] > 0 for p in programs)
