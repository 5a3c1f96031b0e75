"""The proxy-side gate against the simulated engine: order, preemption with transparent
resume, and no call lost or duplicated under concurrent preemptions."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.server import running_proxy
from proxy.state import STATE
from tests.e2e.gated import chat_body, finishing_order, gated_config, stream_text

pytestmark = pytest.mark.e2e


async def _reference(
    http: aiohttp.ClientSession, sim_url: str, body: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    async with http.post(sim_url + "/v1/chat/completions", json=body) as resp:
        text, usage, _ = await stream_text(resp)
    return text, usage


async def test_slots_go_to_the_best_waiting_call(sim_url: str) -> None:
    async with (
        running_proxy(gated_config(sim_url, 1, preempt=False)) as proxy,
        aiohttp.ClientSession() as http,
    ):
        finished = await finishing_order(http, proxy.url, ["lvl3-a", "lvl1-b", "lvl2-c", "lvl1-d"])
    assert finished == ["lvl0-holder", "lvl1-b", "lvl1-d", "lvl2-c", "lvl3-a"]


async def test_preempted_stream_resumes_as_one_correct_answer(sim_url: str) -> None:
    config = gated_config(sim_url, 1, preempt=True, min_quantum_s=0.0, preempt_margin=1)
    async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:
        long_body = chat_body("a long story please", 300, True)
        expected_text, expected_usage = await _reference(http, sim_url, long_body)
        url = proxy.url + "/v1/chat/completions"
        async with http.post(
            url, json=long_body, headers={"X-Program-Id": "lvl3-long"}
        ) as long_resp:
            await long_resp.content.readline()  # the long call is running
            short = await http.post(
                url, json=chat_body("quick", 4, False), headers={"X-Program-Id": "lvl0-short"}
            )
            short_answer = await short.json()
            text, usage, ids = await stream_text(long_resp)
        async with http.get(proxy.url + "/metrics") as m:
            metrics = await m.text()
    assert short_answer["usage"]["completion_tokens"] == 4
    assert text == expected_text  # exactly the uninterrupted answer, nothing lost or repeated
    assert usage["completion_tokens"] == 300
    assert usage["prompt_tokens"] == expected_usage["prompt_tokens"]
    assert len(set(ids)) == 1  # one response id throughout
    assert 'autellix_preemptions_total{engine="sim"} 1.0' in metrics
    assert "autellix_resumes_total 1.0" in metrics


async def test_concurrent_preemptions_lose_and_duplicate_nothing(sim_url: str) -> None:
    rng = random.Random(7)
    config = gated_config(sim_url, 2, preempt=True, min_quantum_s=0.0)
    async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:
        url = proxy.url + "/v1/chat/completions"
        bodies = [chat_body(f"job {i}", rng.randint(20, 120), True) for i in range(12)]
        references = [await _reference(http, sim_url, b) for b in bodies]

        async def run(i: int) -> tuple[str, dict[str, Any]]:
            await asyncio.sleep(rng.random() * 0.3)
            headers = {"X-Program-Id": f"lvl{rng.randint(0, 4)}-job{i}"}
            async with http.post(url, json=bodies[i], headers=headers) as resp:
                assert resp.status == 200
                text, usage, ids = await stream_text(resp)
            assert len(set(ids)) == 1
            return text, usage

        results = await asyncio.gather(*(run(i) for i in range(len(bodies))))
        async with http.get(sim_url + "/sim/state") as resp:
            state = await resp.json()
    for (text, usage), (ref_text, ref_usage), body in zip(results, references, bodies, strict=True):
        assert text == ref_text
        assert usage["completion_tokens"] == body["max_tokens"]
        assert usage["prompt_tokens"] == ref_usage["prompt_tokens"]
    assert state["running"] == []
    assert state["waiting"] == []


async def test_a_resumption_that_finds_no_engine_ends_the_stream_with_an_error(
    sim_url: str,
) -> None:
    config = gated_config(sim_url, 1, preempt=True, min_quantum_s=0.0)
    async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:
        state = proxy.app[STATE]
        url = proxy.url + "/v1/chat/completions"
        async with http.post(
            url, json=chat_body("long", 400, True), headers={"X-Program-Id": "lvl3-long"}
        ) as long_resp:
            await long_resp.content.readline()
            short = asyncio.ensure_future(
                http.post(
                    url, json=chat_body("quick", 40, False), headers={"X-Program-Id": "lvl0-short"}
                )
            )
            for _ in range(200):  # until the long call waits in the gate, preempted
                if state.gate.waiting:
                    break
                await asyncio.sleep(0.01)
            assert [t.call.program_id for t in state.gate.waiting] == ["anonymous/lvl3-long"]
            state.pool.engines["sim"].healthy = False  # the engine is lost while it waits
            (await short).close()
            raw = await asyncio.wait_for(long_resp.read(), 10)  # a hang is the bug this guards
    events = [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]
    assert "error" in events[-1]
    assert events[-1]["error"]["code"] == "engine_unavailable"


async def test_clients_that_all_leave_at_once_leave_every_slot_free(sim_url: str) -> None:
    """64 clients queue behind a cap of 16 and all disconnect together: the slots they were
    about to get go back, so the next call is served (it used to hang forever)."""
    async with (
        running_proxy(gated_config(sim_url, 16, preempt=False)) as proxy,
        aiohttp.ClientSession() as http,
    ):
        url = proxy.url + "/v1/chat/completions"

        async def call(i: int) -> None:
            async with http.post(url, json=chat_body(f"leaver {i}", 400, True)) as resp:
                await resp.content.read()

        leavers = [asyncio.create_task(call(i)) for i in range(64)]
        gate = proxy.app[STATE].gate
        await _until(lambda: gate.queued >= 48)  # 16 running, 48 waiting
        for task in leavers:
            task.cancel()
        await asyncio.gather(*leavers, return_exceptions=True)
        await _until(lambda: not gate.queued and not gate.running("sim"))
        async with asyncio.timeout(30):
            async with http.post(url, json=chat_body("after", 4, False)) as resp:
                assert resp.status == 200
                assert (await resp.json())["usage"]["completion_tokens"] == 4


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while not condition():  # noqa: ASYNC110 - polling the proxy's own state, no event
            await asyncio.sleep(0.01)
