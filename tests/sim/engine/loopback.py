"""Simulated engines served over loopback for the tests of ``proxy.sim``, and small clients."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any

import aiohttp
import orjson

from proxy.serve import serving
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.server import create_sim_app

MODEL = "sim-llama-3.1-8b"
USER = [{"role": "user", "content": "Tell me a story about a lighthouse."}]
CHAT = {"model": MODEL, "messages": USER}
LONG = {**CHAT, "max_tokens": 100_000, "ignore_eos": True}


def fast_config(**settings: Any) -> SimEngineConfig:
    """An engine 1000x faster than real time with short answers, unless told otherwise."""
    settings.setdefault("time_scale", 0.001)
    settings.setdefault("output_len_min", 20)
    settings.setdefault("output_len_max", 40)
    return SimEngineConfig(**settings)


@contextlib.asynccontextmanager
async def engine(**settings: Any) -> AsyncIterator[aiohttp.ClientSession]:
    """A fast simulated engine (``fast_config``) and a client bound to it."""
    async with (
        serving(create_sim_app(fast_config(**settings))) as url,
        aiohttp.ClientSession(base_url=url) as http,
    ):
        yield http


@contextlib.contextmanager
def engine_in_thread(**settings: Any) -> Iterator[str]:
    """A fast simulated engine on its own event loop in a background thread, for blocking
    clients (the OpenAI SDK's sync client, LangChain's ``invoke``); yields its base URL."""
    loop = asyncio.new_event_loop()
    url: Future[str] = Future()
    stop: asyncio.Future[None] = loop.create_future()

    async def main() -> None:
        try:
            async with serving(create_sim_app(fast_config(**settings))) as base:
                url.set_result(base)
                await stop
        except BaseException as exc:
            if not url.done():
                url.set_exception(exc)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        yield url.result(timeout=10)
    finally:
        loop.call_soon_threadsafe(stop.set_result, None)
        thread.join(timeout=10)
        loop.close()


async def post(http: aiohttp.ClientSession, path: str, body: Any, **kw: Any) -> Any:
    async with http.post(path, json=body, **kw) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def sse(resp: aiohttp.ClientResponse) -> list[Any]:
    """Read an SSE answer event by event: JSON chunks, then the string "[DONE]"."""
    events: list[Any] = []
    async for line in resp.content:
        text = line.decode()
        if text == "\n":
            continue
        assert text.startswith("data: "), text
        assert text.endswith("\n"), text
        payload = text[len("data: ") : -1]
        assert "[DONE]" not in events, "nothing may follow [DONE]"
        events.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return events


async def state(http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get("/sim/state") as resp:
        body: dict[str, Any] = await resp.json()
        return body


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    """Poll ``check`` (it asks the server) until it holds, for at most about 5 s."""
    for _ in range(1000):
        if await check():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met in time")


async def metrics(http: aiohttp.ClientSession) -> dict[str, float]:
    """Samples by name and labels, leaving out the model_name label."""
    async with http.get("/metrics") as resp:
        text = await resp.text()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            for label in (
                f',model_name="{MODEL}"',
                f'model_name="{MODEL}",',
                f'model_name="{MODEL}"',
            ):
                name = name.replace(label, "")
            out[name.removesuffix("{}")] = float(value)
    return out
