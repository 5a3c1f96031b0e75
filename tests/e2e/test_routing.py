"""Two simulated engines behind the proxy: the balancer's choices, checked against what each
engine records it served (``GET /sim/served``), and the prefix index fed by the engines' own
KV events on vLLM's wire."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.config import EngineConfig, ProxyConfig
from proxy.serve import serving
from proxy.server import running_proxy
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.server import create_sim_app
from proxy.sim.engine.state import SIM
from proxy.state import STATE

pytestmark = pytest.mark.e2e

MODEL = "sim-llama-3.1-8b"


def _body(program: str, text: str, tokens: int = 8) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": tokens,
        "ignore_eos": True,
    }


@contextlib.asynccontextmanager
async def _engines(kv_events: bool = False) -> AsyncIterator[list[tuple[str, web.Application]]]:
    endpoint = "tcp://127.0.0.1:*" if kv_events else None
    apps = [
        create_sim_app(SimEngineConfig(time_scale=0.02, kv_events_endpoint=endpoint))
        for _ in range(2)
    ]
    async with serving(apps[0]) as a, serving(apps[1]) as b:
        yield [(a, apps[0]), (b, apps[1])]


def _config(engines: list[tuple[str, web.Application]], balancer: str, events: bool) -> ProxyConfig:
    configs = []
    for name, (url, app) in zip("ab", engines, strict=True):
        publisher = app[SIM].kv_events
        configs.append(
            EngineConfig(
                name=name,
                url=url,
                kind="sim",
                kv_events_url=publisher.address if events and publisher else None,
            )
        )
    return ProxyConfig(port=0, engines=configs, routing={"balancer": balancer})


async def _served(http: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with http.get(url + "/sim/served") as resp:
        return await resp.json()  # type: ignore[no-any-return]


async def _call(
    http: aiohttp.ClientSession, proxy: str, program: str, text: str, tokens: int = 8
) -> None:
    async with http.post(
        proxy + "/v1/chat/completions",
        json=_body(program, text, tokens),
        headers={"X-Program-Id": program},
    ) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()


async def test_long_calls_stay_with_their_program_short_calls_spread(
    http: aiohttp.ClientSession,
) -> None:
    async with _engines() as engines, running_proxy(_config(engines, "autellix", False)) as proxy:
        contexts = {i: f"program-{i} " + "long context " * 900 for i in range(4)}

        async def turn(i: int, t: int, delay: float) -> None:
            # Over 2048 prompt tokens each: the program's engine keeps them.
            await asyncio.sleep(delay)
            contexts[i] += f" turn {t} " + "more " * 50
            await _call(http, proxy.url, f"prog-{i}", contexts[i], tokens=20)

        async def short(i: int) -> None:
            await _call(http, proxy.url, f"short-{i}", f"short-{i} hello", tokens=30)

        # Each turn starts the programs' calls in another order: the least-loaded engine for
        # a program's call changes from turn to turn; its engine must not.
        for t in range(3):
            order = [(t + k) % 4 for k in range(4)]
            await asyncio.gather(*(turn(i, t, 0.02 * k) for k, i in enumerate(order)))
        await asyncio.gather(*(short(i) for i in range(8)))
        records = {
            name: await _served(http, url) for name, (url, _) in zip("ab", engines, strict=True)
        }
        for i in range(4):
            where = {
                name: sum(r["prompt"].startswith(f"user\x1fprogram-{i} ") for r in served)
                for name, served in records.items()
            }
            assert sorted(where.values()) == [0, 3], where  # all 3 on one engine
        shorts = {
            name: sum(r["prompt"].startswith("user\x1fshort-") for r in served)
            for name, served in records.items()
        }
        assert sum(shorts.values()) == 8
        assert min(shorts.values()) >= 1, shorts  # spread over both
        moves = proxy.app[STATE].gate.router.moves
        assert not moves, moves


async def test_kv_events_of_simulated_engines_feed_the_index_and_steer_calls(
    http: aiohttp.ClientSession,
) -> None:
    async with (
        _engines(kv_events=True) as engines,
        running_proxy(_config(engines, "prefix-aware", True)) as proxy,
    ):
        router = proxy.app[STATE].gate.router
        assert router.index is not None
        # Events are published as calls are admitted; a SUB socket only hears them once it is
        # connected, so send new documents until the index has heard of one.
        for attempt in range(100):
            prefix = f"document {attempt:03d} " + "shared text " * 530  # ~1600 tokens: short
            await _call(http, proxy.url, f"first-{attempt}", prefix + " question")
            for _ in range(20):
                if len(router.index):
                    break
                await asyncio.sleep(0.01)
            if len(router.index):
                break
        (holder,) = [name for name in "ab" if router.index.size(name)]
        assert router.events[(holder, "BlockStored")] >= 1
        # Nothing was approximated: the simulated engine's events are exact.
        assert all(router.index.size(name) == 0 for name in "ab" if name != holder)
        # The first call found both engines idle: the first engine took it.
        assert holder == "a"
        # Keep it busy, so the least-loaded choice would be the other engine.
        url = engines[0][0]
        busy = asyncio.create_task(_call(http, proxy.url, "busy", "busy " * 10, tokens=4000))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if any(r["prompt"].startswith("user\x1fbusy") for r in await _served(http, url)):
                break
        else:
            pytest.fail("the busy call never reached engine a")
        await _call(http, proxy.url, "follow-up", prefix + " a different question")
        served = await _served(http, url)
        follow = [r for r in served if r["prompt"].startswith("user\x1f" + prefix[:40])]
        assert len(follow) == 2  # the first call and its follow-up, both on the holder
        assert router.decisions["prefix"] == 1
        assert not busy.done()  # a was the busier engine all along
        async with http.get(proxy.url + "/metrics") as resp:
            text = await resp.text()
        assert f'autellix_kv_events_total{{engine="{holder}",kind="BlockStored"}}' in text
        assert f'autellix_prefix_index_blocks{{engine="{holder}"}}' in text
        busy.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await busy
