"""The gate's admission cap against the simulated engine: a fixed cap holds calls in front of
an engine that has no max_inflight and gives each freed place to the best waiting call; an
adaptive cap counts the tokens the relay streams per engine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.config import EngineConfig, GateSettings, ProxyConfig
from proxy.serve import serving
from proxy.server import running_proxy
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.server import create_sim_app
from proxy.state import STATE
from tests.e2e.test_gate import POLICY, _body, _stream_text

pytestmark = pytest.mark.e2e


@pytest.fixture
async def sim_url() -> AsyncIterator[str]:
    async with serving(create_sim_app(SimEngineConfig(time_scale=0.02))) as url:
        yield url


def _config(sim_url: str, **gate: Any) -> ProxyConfig:
    engine = EngineConfig(name="sim", url=sim_url, kind="sim")  # no max_inflight
    return ProxyConfig(port=0, engines=[engine], policy=POLICY, gate=GateSettings(**gate))


async def test_fixed_cap_orders_an_engine_without_max_inflight(sim_url: str) -> None:
    config = _config(sim_url, preempt=False, cap="fixed", cap_k=1)
    async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:
        url = proxy.url + "/v1/chat/completions"
        finished: list[str] = []

        async def call(program: str, tokens: int) -> None:
            async with http.post(
                url, json=_body(program, tokens, False), headers={"X-Program-Id": program}
            ) as resp:
                assert resp.status == 200
                await resp.read()
            finished.append(program)

        holder = asyncio.create_task(call("lvl0-holder", 150))
        await asyncio.sleep(0.05)
        waiters = [asyncio.create_task(call(p, 3)) for p in ("lvl3-a", "lvl1-b", "lvl2-c")]
        await asyncio.sleep(0.05)
        assert proxy.app[STATE].gate.running("sim") == 1  # the cap, not the engine, holds them
        await asyncio.gather(holder, *waiters)
    assert finished == ["lvl0-holder", "lvl1-b", "lvl2-c", "lvl3-a"]


async def test_adaptive_cap_counts_the_streamed_tokens(sim_url: str) -> None:
    config = _config(sim_url, cap="adaptive")
    async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:
        url = proxy.url + "/v1/chat/completions"

        async def call(i: int) -> int:
            async with http.post(
                url, json=_body(f"job {i}", 40, True), headers={"X-Program-Id": f"lvl1-{i}"}
            ) as resp:
                _, usage, _ = await _stream_text(resp)
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
