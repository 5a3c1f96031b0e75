"""The prefix index and a real vLLM: it learns the engine's blocks from vLLM's own KV events,
and a program's follow-up call goes to the engine that holds its prefix, though that engine is
the busier one (a simulated engine serving the same model stands beside it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from proxy.config import EngineConfig, ProxyConfig
from proxy.kvhints.enginehash import block_hashes
from proxy.serve import serving
from proxy.server import RunningProxy, running_proxy
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.server import create_sim_app
from proxy.state import STATE
from tests.vllm.conftest import VLLMServer, skip_module_without_vllm

skip_module_without_vllm()

pytestmark = pytest.mark.vllm

PREFIX = "A shared document about engines and caches. " * 45  # ~2000 characters


def _body(model: str, prompt: str, tokens: int, stream: bool = False) -> dict[str, Any]:
    return {"model": model, "prompt": prompt, "max_tokens": tokens, "ignore_eos": True,
            "stream": stream}  # fmt: skip


@asynccontextmanager
async def _beside_a_sim(
    vllm_server: VLLMServer, **vllm: Any
) -> AsyncIterator[tuple[RunningProxy, aiohttp.ClientSession, str]]:
    """A proxy routing by prefix between the vLLM server (its KV events subscribed; ``vllm``:
    more of its engine settings) and a simulated engine serving the same model: the proxy, a
    client session and the simulated engine's URL."""
    sim = create_sim_app(SimEngineConfig(model=vllm_server.model, time_scale=0.05))
    async with serving(sim) as sim_url, aiohttp.ClientSession() as http:
        engines = [
            EngineConfig(
                name="vllm",
                url=vllm_server.base_url,
                kind="vllm",
                scheduler_plugin=True,
                kv_events_url=vllm_server.kv_events_addr,
                **vllm,
            ),
            EngineConfig(name="sim", url=sim_url, kind="sim"),
        ]
        config = ProxyConfig(
            port=0,
            engines=engines,
            routing={"balancer": "prefix-aware", "min_match_tokens": 128},
        )
        async with running_proxy(config) as proxy:
            yield proxy, http, sim_url


async def test_vllm_events_feed_the_index_and_the_follow_up_finds_its_prefix(
    vllm_server: VLLMServer,
) -> None:
    model = vllm_server.model
    async with _beside_a_sim(vllm_server) as (proxy, http, sim_url):
        router = proxy.app[STATE].gate.router
        url = proxy.url + "/v1/completions"
        headers = {"X-Program-Id": "kv-agent"}
        # Both idle: the first engine listed takes the program's first call.
        async with http.post(url, json=_body(model, PREFIX + "first?", 4), headers=headers) as r:
            assert r.status == 200, await r.text()
            assert r.headers["X-Autellix-Engine"] == "vllm"
            program = r.headers["X-Program-Id"]
            await r.read()
        for _ in range(300):
            if router.events[("vllm", "BlockStored")]:
                break
            await asyncio.sleep(0.1)
        assert router.events[("vllm", "BlockStored")] >= 1, dict(router.events)
        assert router.events[("vllm", "undecodable")] == 0
        # Keep vLLM busy, so that the least-loaded engine is the simulated one.
        busy_resp = await http.post(url, json=_body(model, "busy", 3000, stream=True))
        try:
            assert busy_resp.headers["X-Autellix-Engine"] == "vllm"
            await busy_resp.content.readline()  # it is running
            async with http.post(
                url, json=_body(model, PREFIX + "and a follow-up?", 4), headers=headers
            ) as r:
                assert r.status == 200, await r.text()
                assert r.headers["X-Autellix-Engine"] == "vllm"
                await r.read()
            assert router.decisions["prefix"] >= 1
        finally:
            busy_resp.close()
        async with http.get(sim_url + "/sim/served") as r:
            served = await r.json()
        assert not any(s["prompt"].startswith(PREFIX[:40]) for s in served)
    # vLLM's own record: both of the program's calls arrived there.
    await vllm_server.wait_events(
        lambda ev: sum(1 for e in ev if e.get("event") == "arrived"
                       and e.get("program") == program) >= 2,
        what="the program's two calls in vLLM's record",
    )  # fmt: skip


OTHER = "Another long context, for the engine's own hashes to be learned. " * 30


async def _wait(check: Any, what: str, tries: int = 300) -> None:
    for _ in range(tries):
        if check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_the_engines_own_hashes_steer_the_follow_up_and_its_eviction_unsteers_it(
    vllm_server: VLLMServer,
) -> None:
    """The proxy learns vLLM's block hashes of a finished call's prompt (its /tokenize, hashed
    as vLLM hashes): they are the very hashes vLLM's events announced, the approximation gives
    way to them, the follow-up goes to vLLM by them, and once vLLM drops its cache the next
    follow-up no longer does."""
    model = vllm_server.model
    # kv_hash_algo: vLLM's default --prefix-caching-hash-algo
    async with _beside_a_sim(vllm_server, kv_hash_algo="sha256") as (proxy, http, _):
        router = proxy.app[STATE].gate.router
        index, hashes = router.index, router.hashes
        assert index is not None
        assert hashes is not None
        url = proxy.url + "/v1/completions"
        headers = {"X-Program-Id": "kv-learner"}
        first = _body(model, OTHER + "first?", 4)
        async with http.post(url, json=first, headers=headers) as r:
            assert r.status == 200, await r.text()
            assert r.headers["X-Autellix-Engine"] == "vllm"
            await r.read()
        await _wait(lambda: router.learning[("vllm", "learned")] >= 1, "learning")
        blocks = router.blocks(first, chat=False)
        # What the proxy routed there by approximation has given way to the learned pairs.
        assert index.match(blocks, ["vllm"]) == {"vllm": 0}
        # The proxy's hashes of vLLM's tokens are the ones vLLM's events announced.
        async with http.post(
            vllm_server.base_url + "/tokenize", json={"model": model, "prompt": first["prompt"]}
        ) as r:
            tokens = (await r.json())["tokens"]
        size = index.block_sizes["vllm"]  # known: learning waited for it
        own = block_hashes(tokens, size)
        assert own
        await _wait(
            lambda: index.match_mapped(list(own), ["vllm"])["vllm"] == len(own),
            "vLLM's events to announce the blocks the proxy hashed",
        )
        assert index.match_mapped(hashes.translate(model, blocks), ["vllm"])["vllm"] > 0
        # vLLM busy, the simulated engine idle: the follow-up goes to vLLM by its hashes.
        busy = await http.post(url, json=_body(model, "busy", 3000, stream=True))
        try:
            assert busy.headers["X-Autellix-Engine"] == "vllm"
            await busy.content.readline()
            before = router.engine_hash_matches
            follow = _body(model, OTHER + "and a follow-up?", 4)
            async with http.post(url, json=follow, headers=headers) as r:
                assert r.status == 200, await r.text()
                assert r.headers["X-Autellix-Engine"] == "vllm"
                await r.read()
            assert router.engine_hash_matches > before
        finally:
            busy.close()
        await _wait(lambda: router.learning[("vllm", "learned")] >= 2, "the follow-up learned")
        # vLLM drops its prefix cache (once the busy call is gone). It publishes the clear
        # with its next step's events, so the index hears it once vLLM runs a call again.
        cleared = router.events[("vllm", "AllBlocksCleared")]
        for _ in range(100):
            async with http.post(vllm_server.base_url + "/reset_prefix_cache") as r:
                if r.status == 200 and (await r.json()).get("success"):
                    break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("vLLM did not reset its prefix cache")
        busy = await http.post(url, json=_body(model, "busy again", 3000, stream=True))
        try:
            assert busy.headers["X-Autellix-Engine"] == "vllm"
            await busy.content.readline()
            await _wait(
                lambda: router.events[("vllm", "AllBlocksCleared")] > cleared,
                "the clear event",
            )
            again = _body(model, OTHER + "and once more?", 4)
            async with http.post(url, json=again, headers=headers) as r:
                assert r.status == 200, await r.text()
                assert r.headers["X-Autellix-Engine"] == "sim"  # by load: vLLM holds none
                await r.read()
        finally:
            busy.close()
