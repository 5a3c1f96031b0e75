"""The simulated engine over loopback: a request's life past generation. A client that goes
away or an abort ends it at once, priority orders the waiting queue, and the engine shows its
state (``/sim/state``, models, health)."""

from __future__ import annotations

import asyncio

import pytest

from tests.sim.engine.loopback import (
    CHAT,
    LONG,
    MODEL,
    engine,
    metrics,
    post,
    sse,
    state,
    until,
)

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
