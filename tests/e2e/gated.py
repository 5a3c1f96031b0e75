"""A proxy gating a simulated engine, as the gate's end-to-end tests build it: its config,
request bodies, SSE reading, and the order in which calls waiting behind a holder finish."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import orjson

from proxy.config import EngineConfig, GateSettings, ProxyConfig

MODEL = "sim-llama-3.1-8b"
# Ranks a program by the level its name starts with ("lvl2-..."): orders are known in advance.
POLICY = "tests.e2e.policies:ProgramNamedLevel"


def gated_config(sim_url: str, max_inflight: int | None, **gate: Any) -> ProxyConfig:
    """One simulated engine (``max_inflight`` None: no limit of its own) behind the gate."""
    engine = EngineConfig(name="sim", url=sim_url, kind="sim", max_inflight=max_inflight)
    return ProxyConfig(port=0, engines=[engine], policy=POLICY, gate=GateSettings(**gate))


def chat_body(content: str, tokens: int, stream: bool) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": stream,
        "stream_options": {"include_usage": True} if stream else None,
    }


async def stream_text(resp: aiohttp.ClientResponse) -> tuple[str, dict[str, Any], list[str]]:
    """The answer text, the usage and the chunk ids of an SSE answer."""
    text, usage, ids = [], {}, []
    async for line in resp.content:
        if not line.startswith(b"data: ") or line.strip() == b"data: [DONE]":
            continue
        chunk = orjson.loads(line[6:])
        assert "error" not in chunk, chunk
        ids.append(chunk["id"])
        if chunk.get("usage"):
            usage = chunk["usage"]
        for choice in chunk["choices"]:
            text.append(choice["delta"].get("content") or "")
    return "".join(text), usage, ids


async def finishing_order(
    http: aiohttp.ClientSession,
    proxy_url: str,
    waiters: Sequence[str],
    *,
    meanwhile: Callable[[], None] | None = None,
) -> list[str]:
    """A long call of program "lvl0-holder" takes the engine, then short calls of the
    ``waiters`` programs queue behind it (``meanwhile`` runs once they do): the programs in
    the order their calls finished."""
    url = proxy_url + "/v1/chat/completions"
    finished: list[str] = []

    async def call(program: str, tokens: int) -> None:
        async with http.post(
            url, json=chat_body(program, tokens, False), headers={"X-Program-Id": program}
        ) as resp:
            assert resp.status == 200
            await resp.read()
        finished.append(program)

    holder = asyncio.create_task(call("lvl0-holder", 150))
    await asyncio.sleep(0.05)
    queued = [asyncio.create_task(call(p, 3)) for p in waiters]
    if meanwhile is not None:
        await asyncio.sleep(0.05)
        meanwhile()
    await asyncio.gather(holder, *queued)
    return finished
