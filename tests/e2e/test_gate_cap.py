"""The gate's admission cap against the simulated engine: a fixed cap holds calls in front of
an engine that has no max_inflight and gives each freed place to the best waiting call; an
adaptive cap counts the tokens the relay streams per engine."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from proxy.server import running_proxy
from proxy.state import STATE
from tests.e2e.gated import chat_body, finishing_order, gated_config, stream_text

pytestmark = pytest.mark.e2e


async def test_fixed_cap_orders_an_engine_without_max_inflight(sim_url: str) -> None:
    config = gated_config(sim_url, None, preempt=False, cap="fixed", cap_k=1)
    async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:

        def held_by_the_cap() -> None:  # the cap, not the engine, holds them
            assert proxy.app[STATE].gate.running("sim") == 1

        finished = await finishing_order(
            http, proxy.url, ["lvl3-a", "lvl1-b", "lvl2-c"], meanwhile=held_by_the_cap
        )
    assert finished == ["lvl0-holder", "lvl1-b", "lvl2-c", "lvl3-a"]


async def test_adaptive_cap_counts_the_streamed_tokens(sim_url: str) -> None:
    config = gated_config(sim_url, None, cap="adaptive")
    async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:
        url = proxy.url + "/v1/chat/completions"

        async def call(i: int) -> int:
            async with http.post(
                url, json=chat_body(f"job {i}", 40, True), headers={"X-Program-Id": f"lvl1-{i}"}
            ) as resp:
                _, usage, _ = await stream_text(resp)
            return int(usage["completion_tokens"])

        first = await asyncio.gather(*(call(i) for i in range(6)))
        await asyncio.sleep(0.6)  # past the gate's sampling interval
        second = await asyncio.gather(*(call(i) for i in range(6, 8)))
        caps = proxy.app[STATE].gate.caps
    assert caps.config.mode == "adaptive"
    state = caps._engines["sim"]
    # The first six calls' tokens were counted when they were released (relay-side counts).
    assert state.last_tokens >= sum(first)
    assert sum(second) == 80
