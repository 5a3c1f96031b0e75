"""The simulated engine over loopback, as the proxy and OpenAI clients see it."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from proxy.intercept.tokens import canonical_json, chat_prompt_tokens
from proxy.sim.engine.text import answer_for, count_words
from tests.sim.engine.loopback import (
    CHAT,
    LONG,
    MODEL,
    USER,
    engine,
    metrics,
    post,
    sse,
    state,
    until,
)

# -- generation -------------------------------------------------------------------------------


@pytest.mark.parametrize("include_usage", [True, False])
async def test_chat_stream_is_vllm_shaped(include_usage: bool) -> None:
    body = {**CHAT, "max_tokens": 5, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    async with engine() as http, http.post("/v1/chat/completions", json=body) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = await sse(resp)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    usage = chunks.pop() if include_usage else None
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    tokens = chunks[1:]
    assert len(tokens) == 5
    assert all(count_words(c["choices"][0]["delta"]["content"]) == 1 for c in tokens)
    assert [c["choices"][0]["finish_reason"] for c in tokens] == [None] * 4 + ["length"]
    if usage is not None:
        assert usage["choices"] == []
        assert usage["usage"] == {
            "prompt_tokens": chat_prompt_tokens(USER),
            "completion_tokens": 5,
            "total_tokens": chat_prompt_tokens(USER) + 5,
        }
    assert all("usage" not in c for c in chunks)


async def test_continuous_usage_stats_count_up() -> None:
    body = {
        **CHAT,
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"continuous_usage_stats": True},
    }
    async with engine() as http, http.post("/v1/chat/completions", json=body) as resp:
        events = await sse(resp)
    assert [e["usage"]["completion_tokens"] for e in events[1:-1]] == [1, 2, 3]


async def test_whole_answers_match_streams_and_stop_at_their_natural_length() -> None:
    async with engine() as http:
        whole = await post(http, "/v1/chat/completions", CHAT)
        async with http.post("/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
            streamed = await sse(resp)
    natural = answer_for(canonical_json(USER), length_range=(20, 40)).natural_length
    assert whole["object"] == "chat.completion"
    choice = whole["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert (
        whole["usage"]["completion_tokens"] == natural == count_words(choice["message"]["content"])
    )
    assert whole["usage"]["total_tokens"] == natural + whole["usage"]["prompt_tokens"]
    text = "".join(c["choices"][0]["delta"]["content"] for c in streamed[:-1])
    assert text == choice["message"]["content"]


async def test_ignore_eos_generates_exactly_max_tokens() -> None:
    async with engine(output_len_min=3, output_len_max=3) as http:
        body = {**CHAT, "max_tokens": 9, "ignore_eos": True}
        out = await post(http, "/v1/chat/completions", body)
        natural = await post(http, "/v1/chat/completions", {**CHAT, "max_tokens": 9})
    assert out["usage"]["completion_tokens"] == 9
    assert out["choices"][0]["finish_reason"] == "length"
    assert natural["usage"]["completion_tokens"] == 3
    assert natural["choices"][0]["finish_reason"] == "stop"


async def test_completions_stream_and_whole() -> None:
    body = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 4}
    async with engine() as http:
        whole = await post(http, "/v1/completions", body)
        ids = await post(http, "/v1/completions", {**body, "prompt": [1, 2, 3]})
        listed = await post(http, "/v1/completions", {**body, "prompt": ["Once upon a time"]})
        async with http.post(
            "/v1/completions",
            json={**body, "stream": True, "stream_options": {"include_usage": True}},
        ) as resp:
            events = await sse(resp)
    assert whole["id"].startswith("cmpl-")
    assert whole["object"] == "text_completion"
    assert whole["usage"] == {"prompt_tokens": 4, "completion_tokens": 4, "total_tokens": 8}
    assert ids["usage"]["prompt_tokens"] == 3
    assert listed["choices"][0]["text"] == whole["choices"][0]["text"]
    tokens, usage = events[:-2], events[-2]
    assert [c["choices"][0]["finish_reason"] for c in tokens] == [None, None, None, "length"]
    assert "".join(c["choices"][0]["text"] for c in tokens) == whole["choices"][0]["text"]
    assert usage["choices"] == []
    assert usage["usage"]["completion_tokens"] == 4


@pytest.mark.parametrize("stream", [True, False])
async def test_continue_final_message_resumes_the_uninterrupted_answer(stream: bool) -> None:
    async with engine() as http:
        full = await post(http, "/v1/chat/completions", CHAT)
        partial = await post(http, "/v1/chat/completions", {**CHAT, "max_tokens": 7})
        done = partial["choices"][0]["message"]["content"]
        resume = {
            **CHAT,
            "messages": [*USER, {"role": "assistant", "content": done}],
            "continue_final_message": True,
            "add_generation_prompt": False,
            "stream": stream,
        }
        if stream:
            resume["stream_options"] = {"include_usage": True}
            async with http.post("/v1/chat/completions", json=resume) as resp:
                events = await sse(resp)
            rest = "".join(e["choices"][0]["delta"]["content"] for e in events[1:-2])
            reason = events[-3]["choices"][0]["finish_reason"]
            usage = events[-2]["usage"]
        else:
            out = await post(http, "/v1/chat/completions", resume)
            rest = out["choices"][0]["message"]["content"]
            reason, usage = out["choices"][0]["finish_reason"], out["usage"]
    total = full["usage"]["completion_tokens"]
    assert done + rest == full["choices"][0]["message"]["content"]
    assert usage["completion_tokens"] == total - 7
    assert reason == "stop"
    assert usage["prompt_tokens"] > full["usage"]["prompt_tokens"]  # the partial answer is input


async def test_request_ids_come_from_the_header_or_a_counter() -> None:
    async with engine() as http:
        async with http.post(
            "/v1/chat/completions", json={**CHAT, "max_tokens": 1}, headers={"X-Request-Id": "a-1"}
        ) as resp:
            assert resp.headers["X-Request-Id"] == "a-1"
            assert (await resp.json())["id"] == "chatcmpl-a-1"
        first = await post(http, "/v1/chat/completions", {**CHAT, "max_tokens": 1})
        second = await post(http, "/v1/chat/completions", {**CHAT, "max_tokens": 1})
        assert first["id"] != second["id"]
        async with http.post(
            "/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "has space"}
        ) as resp:
            assert resp.status == 400


async def test_vendor_fields_are_accepted() -> None:
    body = {**CHAT, "max_tokens": 2, "vllm_xargs": {"program": "p1"}, "user": "u", "top_k": 3}
    async with engine() as http:
        out = await post(http, "/v1/chat/completions", body)
    assert out["usage"]["completion_tokens"] == 2


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def test_a_tool_call_streams_over_several_engine_steps() -> None:
    body = {**CHAT, "tools": [WEATHER], "stream": True, "stream_options": {"include_usage": True}}
    async with engine() as http:
        async with http.post("/v1/chat/completions", json=body) as resp:
            events = await sse(resp)
        seen = await metrics(http)
    *chunks, usage, done = events
    assert done == "[DONE]"
    tokens = usage["usage"]["completion_tokens"]
    assert seen["vllm:generation_tokens_total"] == tokens > 1  # the engine made just those
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"] == "get_weather"
    pieces = [c["choices"][0]["delta"]["tool_calls"][0]["function"] for c in chunks[2:-1]]
    assert len(pieces) > 1
    assert orjson.loads("".join(p["arguments"] for p in pieces)).keys() == {"city"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


async def test_an_agent_loop_calls_the_tool_then_answers_in_text() -> None:
    async with engine() as http:
        asked = await post(http, "/v1/chat/completions", {**CHAT, "tools": [WEATHER]})
        message = asked["choices"][0]["message"]
        assert asked["choices"][0]["finish_reason"] == "tool_calls"
        assert message["content"] is None
        (call,) = message["tool_calls"]
        assert call["id"].startswith("call_")
        assert call["type"] == "function"
        assert call["function"]["name"] == "get_weather"
        result = {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}
        loop = {**CHAT, "messages": [*USER, message, result], "tools": [WEATHER]}
        answered = await post(http, "/v1/chat/completions", loop)
        forced = await post(http, "/v1/chat/completions", {**loop, "tool_choice": "required"})
    assert answered["choices"][0]["finish_reason"] == "stop"
    assert answered["choices"][0]["message"]["tool_calls"] == []
    assert count_words(answered["choices"][0]["message"]["content"]) > 0
    assert forced["choices"][0]["finish_reason"] == "tool_calls"
    assert answered["usage"]["prompt_tokens"] > asked["usage"]["prompt_tokens"]


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/chat/completions", b"{not json", 400, None),
        ("/v1/chat/completions", {**CHAT, "max_tokens": "5"}, 400, "max_tokens"),
        ("/v1/chat/completions", {**CHAT, "model": "gpt-4"}, 404, "model"),
        ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}, 400, "tools.0.function"),
        ("/v1/chat/completions", {**CHAT, "tool_choice": "required"}, 400, "tool_choice"),
        ("/v1/completions", {"model": MODEL, "prompt": [[1], []]}, 400, "prompt.1"),
    ],
)  # fmt: skip
async def test_bad_requests_get_openai_shaped_errors(
    path: str, body: Any, status: int, param: str | None
) -> None:
    # Which bodies are refused, and why, is test_wire's; here: the error edge and no side effect.
    async with engine() as http:
        kw: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
        async with http.post(path, **kw) as resp:
            assert resp.status == status
            error = (await resp.json())["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"]
        assert error["param"] == param
        assert (await state(http))["running"] == []


async def test_priority_needs_the_priority_policy() -> None:
    body = {**CHAT, "max_tokens": 1, "priority": 3}
    async with engine(scheduling_policy="fcfs") as http:
        async with http.post("/v1/chat/completions", json=body) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"]["param"] == "priority"
        await post(http, "/v1/chat/completions", {**body, "priority": 0})
    async with engine() as http:
        await post(http, "/v1/chat/completions", body)


async def test_unknown_route_is_openai_shaped() -> None:
    async with engine() as http, http.get("/v2/nothing") as resp:
        assert resp.status == 404
        assert (await resp.json())["error"]["type"] == "not_found_error"


# -- abort, disconnect, priority, introspection --------------------------------------------------


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_aborts_at_once(stream: bool) -> None:
    async with engine() as http:
        call = asyncio.ensure_future(
            http.post("/v1/chat/completions", json={**LONG, "stream": stream})
        )
        if stream:
            resp = await call
            await resp.content.readline()  # generation has begun
            resp.close()
        else:

            async def running() -> bool:
                return len((await state(http))["running"]) == 1

            await until(running)
            call.cancel()

        async def idle() -> bool:
            now = await state(http)
            return bool(now["running"] == now["waiting"] == [] and now["aborted"] == 1)

        await until(idle)
        assert (await state(http))["kv_usage"] == 0.0
        seen = await metrics(http)
    assert seen['sim:num_aborted_requests_total{cause="disconnect"}'] == 1.0
    assert seen['sim:num_aborted_requests_total{cause="abort_request"}'] == 0.0
    assert seen["vllm:kv_cache_usage_perc"] == 0.0


async def test_abort_endpoint_ends_running_and_waiting_requests() -> None:
    async with engine(max_num_seqs=1) as http:
        resp = await http.post(
            "/v1/chat/completions", json={**LONG, "stream": True}, headers={"X-Request-Id": "r1"}
        )
        first = await resp.content.readline()
        assert first.startswith(b"data: ")
        queued = asyncio.ensure_future(
            post(
                http,
                "/v1/completions",
                {"model": MODEL, "prompt": "hi"},
                headers={"X-Request-Id": "w1"},
            )
        )

        async def waiting() -> bool:
            return bool((await state(http))["waiting"] == ["w1"])

        await until(waiting)
        out = await post(http, "/abort_requests", {"request_ids": ["cmpl-w1-0", "nobody"]})
        assert out == {"aborted": ["w1"]}
        whole = await queued
        assert whole["choices"][0]["finish_reason"] == "abort"
        assert whole["usage"]["completion_tokens"] == 0

        out = await post(http, "/abort_requests", {"request_ids": ["chatcmpl-r1"]})
        assert out == {"aborted": ["r1"]}
        events = await sse(resp)
        resp.close()
        assert events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "abort"
        now = await state(http)
        assert now["running"] == now["waiting"] == []
        assert now["kv_usage"] == 0.0
        assert now["aborted"] == 2
        async with http.post("/abort_requests", json={"request_ids": "r1"}) as bad:
            assert bad.status == 400


async def test_priority_orders_the_waiting_queue_behind_a_running_request() -> None:
    async with engine(max_num_seqs=1) as http:
        resp = await http.post(
            "/v1/chat/completions",
            json={**LONG, "stream": True, "priority": 9},
            headers={"X-Request-Id": "long"},
        )
        await resp.content.readline()
        calls = []
        for rid, priority in (("p5", 5), ("p1", 1), ("p5b", 5)):
            body = {**CHAT, "max_tokens": 2, "priority": priority}
            calls.append(
                asyncio.ensure_future(
                    post(http, "/v1/chat/completions", body, headers={"X-Request-Id": rid})
                )
            )

            async def queued(n: int = len(calls)) -> bool:
                return len((await state(http))["waiting"]) == n

            await until(queued)
        now = await state(http)
        assert now["running"] == ["long"]  # a better arrival never displaces a running request
        assert now["waiting"] == ["p1", "p5", "p5b"]
        in_flight = await http.post(
            "/v1/chat/completions", json=CHAT, headers={"X-Request-Id": "p1"}
        )
        assert in_flight.status == 400  # that id is in flight
        in_flight.close()
        await post(http, "/abort_requests", {"request_ids": ["long"]})
        await sse(resp)
        resp.close()
        finished = await asyncio.gather(*calls)
        assert [f["choices"][0]["finish_reason"] for f in finished] == ["length"] * 3


async def test_models_and_health() -> None:
    async with engine(served_model_names=["a", "b"]) as http:
        async with http.get("/health") as resp:
            assert resp.status == 200
        async with http.get("/v1/models") as resp:
            listing = await resp.json()
        assert listing["object"] == "list"
        assert [m["id"] for m in listing["data"]] == ["a", "b"]
        assert all(m["object"] == "model" for m in listing["data"])
        async with http.post("/v1/chat/completions", json=CHAT) as resp:
            assert resp.status == 404  # served names replace the model name, as in vLLM
        await post(http, "/v1/chat/completions", {**CHAT, "model": "b", "max_tokens": 3})
