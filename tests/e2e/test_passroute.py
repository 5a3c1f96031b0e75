"""Pass-through routes over several engines: work is placed by the balancer, a stored object is
sought on each engine, and an engine can be named (by keys allowed to)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from proxy.config import EngineConfig, ProxyConfig
from proxy.keyconfig import ApiKeyConfig
from proxy.serve import serving
from proxy.server import running_proxy
from proxy.state import STATE
from tests.e2e.fakes import fake_engine

pytestmark = pytest.mark.e2e


def responses_engine(name: str, stored: set[str]) -> web.Application:
    """An engine keeping some responses: it knows only those it made."""
    app = web.Application()

    async def get_response(request: web.Request) -> web.Response:
        rid = request.match_info["rid"]
        if rid not in stored:
            return web.json_response({"error": {"message": "no such response"}}, status=404)
        return web.json_response({"id": rid, "object": "response", "made_by": name})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/v1/responses/{rid}", get_response)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    return app


@contextlib.asynccontextmanager
async def two(a: web.Application, b: web.Application) -> AsyncIterator[list[EngineConfig]]:
    async with serving(a) as url_a, serving(b) as url_b:
        yield [EngineConfig(name="a", url=url_a), EngineConfig(name="b", url=url_b)]


async def test_work_is_placed_by_the_balancer() -> None:
    (app_a, seen_a), (app_b, seen_b) = fake_engine(["m"]), fake_engine(["m"])
    async with two(app_a, app_b) as engines, aiohttp.ClientSession() as http:
        config = ProxyConfig(port=0, engines=engines, routing={"balancer": "round-robin"})
        async with running_proxy(config) as proxy:
            for _ in range(4):
                async with http.post(
                    proxy.url + "/v1/embeddings", json={"model": "m", "input": "x"}
                ) as r:
                    assert r.status == 200
            router = proxy.app[STATE].gate.router
            assert router.decisions["turn"] == 4
    assert len(seen_a) == len(seen_b) == 2  # in turn, as round-robin places them


async def test_a_stored_response_is_sought_on_each_engine() -> None:
    async with (
        two(responses_engine("a", {"r-a"}), responses_engine("b", {"r-b"})) as engines,
        aiohttp.ClientSession() as http,
        running_proxy(ProxyConfig(port=0, engines=engines)) as proxy,
    ):
        for rid, maker in (("r-a", "a"), ("r-b", "b")):
            async with http.get(proxy.url + f"/v1/responses/{rid}") as r:
                assert r.status == 200
                assert (await r.json())["made_by"] == maker
        async with http.get(proxy.url + "/v1/responses/r-none") as r:
            assert r.status == 404  # no engine has it


async def test_an_engine_can_be_named_by_keys_allowed_to() -> None:
    (app_a, seen_a), (app_b, seen_b) = fake_engine(["m"]), fake_engine(["m"])
    keys = [
        ApiKeyConfig.model_validate({"key": "key-plain", "tenant": "t"}),
        ApiKeyConfig.model_validate({"key": "key-ops", "tenant": "ops", "admin": True}),
    ]
    async with two(app_a, app_b) as engines, aiohttp.ClientSession() as http:
        config = ProxyConfig(port=0, engines=engines, api_keys=keys)
        async with running_proxy(config) as proxy:
            url = proxy.url + "/v1/embeddings"
            ops = {"Authorization": "Bearer key-ops"}
            for _ in range(3):
                async with http.post(
                    url, json={"model": "m"}, headers={**ops, "X-Autellix-Engine": "b"}
                ) as r:
                    assert r.status == 200
            async with http.post(
                url, json={"model": "m"}, headers={**ops, "X-Autellix-Engine": "zz"}
            ) as r:
                assert r.status == 404
                assert (await r.json())["error"]["code"] == "engine_not_found"
            plain = {"Authorization": "Bearer key-plain", "X-Autellix-Engine": "b"}
            async with http.post(url, json={"model": "m"}, headers=plain) as r:
                assert r.status == 403
                assert (await r.json())["error"]["type"] == "permission_error"
    assert len(seen_b) == 3
    assert seen_a == []
