"""Engines that hang, die, go silent or babble: the proxy answers within its timeouts, in the
OpenAI shape, retries what it safely can elsewhere, and ejects the engine until it is well."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from proxy.config import EngineConfig, ProxyConfig
from proxy.serve import serving
from proxy.server import running_proxy
from proxy.state import STATE
from tests.e2e.fakes import Script, fake_engine

pytestmark = pytest.mark.e2e

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = orjson.dumps(
    {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)

Behaviour = Callable[[web.Request], Awaitable[web.StreamResponse]]


def engine_app(behaviour: Behaviour, calls: list[str]) -> web.Application:
    app = web.Application()

    async def generate(request: web.Request) -> web.StreamResponse:
        await request.read()
        calls.append(request.path)
        return await behaviour(request)

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    app.router.add_post("/v1/chat/completions", generate)
    app.router.add_get("/v1/models", models)
    return app


async def hang(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def die(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()  # the engine process went away mid-call
    await asyncio.sleep(3600)
    raise AssertionError("unreachable")


async def garbage(request: web.Request) -> web.StreamResponse:
    return web.Response(body=b"<html>oops", content_type="application/json")


async def garbage_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"data: {not json\n\n")
    await asyncio.sleep(3600)
    return resp


async def silent_stream(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n')
    await asyncio.sleep(3600)
    return resp


def config(
    *urls: str, health_interval_s: float = 0.2, backoff_s: float = 0.0, **engine: Any
) -> ProxyConfig:
    """Engines ``e0``, ``e1``... at ``urls``; the circuit breaker waits ``backoff_s`` (none
    by default, so that a passing check re-admits at once)."""
    engines = [
        EngineConfig.model_validate(
            {
                "name": f"e{i}",
                "url": url,
                "models": ["m"],
                "first_byte_timeout_s": 0.5,
                "idle_timeout_s": 0.5,
                **engine,
            }
        )
        for i, url in enumerate(urls)
    ]
    return ProxyConfig(
        port=0,
        engines=engines,
        health_interval_s=health_interval_s,
        routing={"breaker_backoff_s": backoff_s},
    )


def error_of(payload: Any) -> dict[str, Any]:
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("behaviour", "status", "code"),
    [
        (hang, 504, "engine_timeout"),
        (die, 502, "engine_error"),
        (garbage, 502, "engine_bad_answer"),
    ],
)
async def test_a_failing_engine_alone_is_an_openai_error(
    http: aiohttp.ClientSession, behaviour: Behaviour, status: int, code: str
) -> None:
    calls: list[str] = []
    async with (
        serving(engine_app(behaviour, calls)) as url,
        running_proxy(config(url)) as proxy,
        http.post(proxy.url + "/v1/chat/completions", json=CHAT) as resp,
    ):
        assert resp.status == status
        assert error_of(await resp.json())["code"] == code


@pytest.mark.parametrize("behaviour", [hang, die])
async def test_a_call_that_failed_before_an_answer_is_retried_once_elsewhere(
    http: aiohttp.ClientSession, behaviour: Behaviour
) -> None:
    bad: list[str] = []
    good_app, _ = fake_engine(["m"], Script(body=ANSWER))
    async with (
        serving(engine_app(behaviour, bad)) as bad_url,
        serving(good_app) as good_url,
        running_proxy(config(bad_url, good_url)) as proxy,
    ):
        # Send until the failing engine has had one: the least loaded engine goes first.
        for _ in range(4):
            async with http.post(proxy.url + "/v1/chat/completions", json=CHAT) as resp:
                assert resp.status == 200
                assert (await resp.json())["choices"][0]["message"]["content"] == "ok"
            if bad:
                break
        async with http.get(proxy.url + "/metrics") as resp:
            metrics = await resp.text()
    assert len(bad) == 1
    assert 'autellix_engine_retries_total{engine="e0"} 1.0' in metrics


@pytest.mark.parametrize(
    ("behaviour", "code"),
    [(silent_stream, "engine_timeout"), (garbage_stream, "engine_bad_answer")],
)
async def test_a_stream_that_goes_silent_or_babbles_ends_with_an_error_event(
    http: aiohttp.ClientSession, behaviour: Behaviour, code: str
) -> None:
    calls: list[str] = []
    async with (
        serving(engine_app(behaviour, calls)) as url,
        running_proxy(config(url)) as proxy,
        http.post(proxy.url + "/v1/chat/completions", json={**CHAT, "stream": True}) as resp,
    ):
        assert resp.status == 200
        body = await resp.read()
    last = body.strip().split(b"\n\n")[-1]
    assert last.startswith(b"data: ")
    assert error_of(orjson.loads(last[6:]))["code"] == code


async def test_passive_ejection_and_readmission(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    healthy = asyncio.Event()
    app = engine_app(garbage, calls)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({}, status=200 if healthy.is_set() else 503)

    app.router.add_get("/health", health)
    healthy.set()
    async with (
        serving(app) as url,
        # No health check runs by itself here; the test runs the one that re-admits.
        running_proxy(config(url, eject_after=2, kind="vllm", health_interval_s=3600)) as proxy,
    ):
        caplog.set_level(logging.WARNING)
        for _ in range(2):
            async with http.post(proxy.url + "/v1/chat/completions", json=CHAT) as resp:
                assert resp.status == 502
        async with http.post(proxy.url + "/v1/chat/completions", json=CHAT) as resp:
            assert resp.status == 503  # ejected: no call reaches it
        assert len(calls) == 2
        assert any("ejected" in r.getMessage() for r in caplog.records)
        async with http.get(proxy.url + "/ready") as resp:
            assert resp.status == 503
            assert "ejected" in (await resp.json())["engines"]["e0"]["error"]
        # Its health check passes: it is admitted again.
        state = proxy.app[STATE]
        await state.pool.refresh(state.client())
        async with http.get(proxy.url + "/ready") as resp:
            assert resp.status == 200
        async with http.post(proxy.url + "/v1/chat/completions", json=CHAT) as resp:
            assert resp.status == 502
        assert len(calls) == 3
        # Half-open: on trial, one failure is enough to eject it again.
        async with http.post(proxy.url + "/v1/chat/completions", json=CHAT) as resp:
            assert resp.status == 503
        assert len(calls) == 3


async def dribble(request: web.Request) -> web.StreamResponse:
    """Never silent, never done: a byte every 0.1 s, in the call's own content type."""
    body = await request.json()
    stream = body.get("stream", False)
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream" if stream else "application/json"}
    )
    await resp.prepare(request)
    while True:
        await resp.write(
            b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n' if stream else b" "
        )
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_that_never_ends_is_cut_at_the_engines_timeout(
    http: aiohttp.ClientSession, stream: bool
) -> None:
    calls: list[str] = []
    async with (
        serving(engine_app(dribble, calls)) as url,
        running_proxy(config(url, timeout_s=0.8)) as proxy,
        http.post(proxy.url + "/v1/chat/completions", json={**CHAT, "stream": stream}) as resp,
    ):
        body = await resp.read()
    if stream:
        assert resp.status == 200
        err = error_of(orjson.loads(body.strip().split(b"\n\n")[-1][6:]))
    else:
        assert resp.status == 504
        err = error_of(orjson.loads(body))
    assert err["code"] == "engine_timeout"
    assert "did not finish its answer in time" in err["message"]
