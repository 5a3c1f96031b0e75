"""The proxy's HTTP behaviour over loopback: errors, headers, relaying, disconnects, operations."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import orjson
import pytest

from proxy.config import EngineConfig, ProxyConfig
from proxy.serve import serving
from proxy.server import RunningProxy, running_proxy
from proxy.sim.engine.config import SimEngineConfig
from proxy.state import STATE
from tests.e2e.fakes import Script, fake_engine, sse

pytestmark = pytest.mark.e2e

MODEL = "sim-llama-3.1-8b"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def _assert_openai_error(payload: Any, param: str | None = None) -> dict[str, Any]:
    assert set(payload) >= {"error"}
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str)
    assert err["message"]
    if param is not None:
        assert err["param"] == param
    return err  # type: ignore[no-any-return]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("data", "param"),
    [
        (b"{not json", None),
        (b"[1]", None),
        (orjson.dumps({**CHAT, "messages": "hi"}), "messages"),
        (orjson.dumps({**CHAT, "max_tokens": "many"}), "max_tokens"),
        (orjson.dumps({**CHAT, "stream": 1}), "stream"),
    ],
)
async def test_bad_input_is_400_naming_the_field(
    proxy: RunningProxy, http: aiohttp.ClientSession, data: bytes, param: str | None
) -> None:
    async with http.post(proxy.url + "/v1/chat/completions", data=data) as resp:
        assert resp.status == 400
        err = _assert_openai_error(await resp.json(), param)
        assert err["type"] == "invalid_request_error"


async def test_unknown_model_404_and_unknown_route_404(
    proxy: RunningProxy, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        proxy.url + "/v1/chat/completions", json={**CHAT, "model": "gpt-x"}
    ) as resp:
        assert resp.status == 404
        err = _assert_openai_error(await resp.json(), "model")
        assert "gpt-x" in err["message"]
        assert (err["type"], err["code"]) == ("invalid_request_error", "model_not_found")
    async with http.get(proxy.url + "/nowhere") as resp:
        assert resp.status == 404
        _assert_openai_error(await resp.json())


async def test_body_too_large_is_413() -> None:
    config = ProxyConfig(port=0, max_body_bytes=2048, sim=SimEngineConfig(time_scale=0.01))
    async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:
        big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
        async with http.post(proxy.url + "/v1/chat/completions", json=big) as resp:
            assert resp.status == 413
            _assert_openai_error(await resp.json())


async def test_engine_error_passes_through_with_status_and_body(
    http: aiohttp.ClientSession,
) -> None:
    body = orjson.dumps(
        {"error": {"message": "slow down", "type": "rate_limit", "param": None, "code": 429}}
    )
    app, seen = fake_engine(["m"], Script(status=429, body=body))
    async with serving(app) as engine_url:
        config = ProxyConfig(
            port=0, engines=[EngineConfig(name="f", url=engine_url, kind="openai")]
        )
        url = "/v1/chat/completions"
        async with (
            running_proxy(config) as proxy,
            http.post(proxy.url + url, json={**CHAT, "model": "m"}) as resp,
        ):
            assert resp.status == 429
            assert await resp.read() == body
    assert len(seen) == 1


async def test_unreachable_engine_is_502_naming_it_then_503(http: aiohttp.ClientSession) -> None:
    port = _free_port()
    engine = EngineConfig(name="gone", url=f"http://127.0.0.1:{port}", kind="vllm", models=["m"])
    async with running_proxy(ProxyConfig(port=0, engines=[engine])) as proxy:
        # Start-up health check failed: the engine is known to be down.
        async with http.post(
            proxy.url + "/v1/chat/completions", json={**CHAT, "model": "m"}
        ) as resp:
            assert resp.status == 503
            assert "gone" in _assert_openai_error(await resp.json())["message"]
        async with http.get(proxy.url + "/ready") as resp:
            assert resp.status == 503
        # Were it believed healthy, the failed connection itself names the engine (502).
        proxy.app[STATE].pool.engines["gone"].healthy = True
        async with http.post(
            proxy.url + "/v1/chat/completions", json={**CHAT, "model": "m"}
        ) as resp:
            assert resp.status == 502
            err = _assert_openai_error(await resp.json())
            assert "gone" in err["message"]
            assert err["code"] == "engine_unreachable"


async def test_failover_to_a_healthy_engine(http: aiohttp.ClientSession) -> None:
    app, seen = fake_engine(["m"], Script(body=b'{"choices": [], "usage": null}'))
    async with serving(app) as engine_url:
        engines = [
            EngineConfig(name="dead", url=f"http://127.0.0.1:{_free_port()}", models=["m"]),
            EngineConfig(name="live", url=engine_url, models=["m"]),
        ]
        async with running_proxy(ProxyConfig(port=0, engines=engines)) as proxy:
            proxy.app[STATE].pool.engines["dead"].healthy = True  # as if it died a moment ago
            proxy.app[STATE].pool.engines["live"].inflight = 5  # so "dead" is chosen first
            async with http.post(
                proxy.url + "/v1/chat/completions", json={**CHAT, "model": "m"}
            ) as resp:
                assert resp.status == 200
                assert resp.headers["X-Autellix-Engine"] == "live"
            assert not proxy.app[STATE].pool.engines["dead"].healthy
    assert len(seen) == 1


async def test_stream_bytes_are_relayed_unchanged(http: aiohttp.ClientSession) -> None:
    chunks = sse(
        {
            "id": "x",
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": "a"}, "finish_reason": None}
            ],
        },
        {"id": "x", "choices": [{"index": 0, "delta": {"content": "b"}, "finish_reason": "stop"}]},
        {
            "id": "x",
            "choices": [],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        },
    )
    # Odd write boundaries, with a keep-alive comment: what the client reads must be identical.
    raw = b": ping\n\n" + b"".join(chunks)
    script = Script(chunks=[raw[:3], raw[3:50], raw[50:51], raw[51:]], delay_s=0.01)
    app, seen = fake_engine(["m"], script)
    async with serving(app) as engine_url:
        config = ProxyConfig(port=0, engines=[EngineConfig(name="f", url=engine_url)])
        async with running_proxy(config) as proxy:
            body = {**CHAT, "model": "m", "stream": True, "stream_options": {"include_usage": True}}
            async with http.post(proxy.url + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"].startswith("text/event-stream")
                assert await resp.read() == raw
            # Without include_usage the proxy asks for it and hides the usage-only chunk.
            body = {**CHAT, "model": "m", "stream": True}
            async with http.post(proxy.url + "/v1/chat/completions", json=body) as resp:
                got = await resp.read()
            assert got == b": ping\n\n" + chunks[0] + chunks[1] + chunks[3]
    assert orjson.loads(seen[1].body)["stream_options"] == {"include_usage": True}


async def test_request_id_honoured_generated_and_forwarded(http: aiohttp.ClientSession) -> None:
    app, seen = fake_engine(["m"], Script(body=b"{}"))
    async with serving(app) as engine_url:
        config = ProxyConfig(port=0, engines=[EngineConfig(name="f", url=engine_url)])
        async with running_proxy(config) as proxy:
            url = proxy.url + "/v1/chat/completions"
            async with http.post(
                url, json={**CHAT, "model": "m"}, headers={"X-Request-Id": "abc-123"}
            ) as resp:
                assert resp.headers["X-Request-Id"] == "abc-123"
            async with http.post(url, json={**CHAT, "model": "m"}) as resp:
                generated = resp.headers["X-Request-Id"]
            async with http.post(
                url, json={**CHAT, "model": "m"}, headers={"X-Request-Id": "has space"}
            ) as resp:
                assert resp.status == 400
                _assert_openai_error(await resp.json(), "X-Request-Id")
    # Engines get ids of the proxy's own, random and unique; never the client's.
    upstream = [s.headers["X-Request-Id"] for s in seen]
    assert len(upstream) == 2
    assert len(set(upstream)) == 2
    assert "abc-123" not in upstream
    assert generated not in upstream
    assert all(len(rid) >= 24 for rid in upstream)
    assert generated


async def test_engine_api_key_or_client_authorization(http: aiohttp.ClientSession) -> None:
    app, seen = fake_engine(["m"], Script(body=b"{}"))
    async with serving(app) as engine_url:
        keyed = EngineConfig(name="f", url=engine_url, api_key="engine-secret")  # type: ignore[arg-type]
        for forward in (False, True):
            config = ProxyConfig(port=0, engines=[keyed], forward_client_auth=forward)
            async with running_proxy(config) as proxy:
                headers = {"Authorization": "Bearer client-key"}
                async with http.post(
                    proxy.url + "/v1/chat/completions", json={**CHAT, "model": "m"}, headers=headers
                ):
                    pass
    calls = [s for s in seen if s.path == "/v1/chat/completions"]
    assert [c.headers.get("Authorization") for c in calls] == [
        "Bearer engine-secret",
        "Bearer client-key",
    ]


async def test_other_v1_routes_pass_through(http: aiohttp.ClientSession) -> None:
    app_a, seen_a = fake_engine(["a"])
    app_b, seen_b = fake_engine(["b"])
    async with serving(app_a) as url_a, serving(app_b) as url_b:
        engines = [EngineConfig(name="ea", url=url_a), EngineConfig(name="eb", url=url_b)]
        async with running_proxy(ProxyConfig(port=0, engines=engines)) as proxy:
            async with http.post(
                proxy.url + "/v1/embeddings?x=1", json={"model": "b", "input": "hello"}
            ) as resp:
                assert resp.status == 200
                assert resp.headers["X-Fake"] == "1"
                assert (await resp.json())["echo"] == "/v1/embeddings?x=1"
            async with http.get(proxy.url + "/v1/models") as resp:
                ids = [m["id"] for m in (await resp.json())["data"]]
            assert ids == ["a", "b"]
    assert [s.path for s in seen_b] == ["/v1/embeddings?x=1"]
    assert seen_a == []


async def _sim_state(proxy: RunningProxy, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with http.get(f"{proxy.sim_url}/sim/state") as resp:
        return await resp.json()  # type: ignore[no-any-return]


async def _wait_until(predicate: Any, within_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_aborts_engine_request(
    proxy: RunningProxy, http: aiohttp.ClientSession, stream: bool
) -> None:
    body = {**CHAT, "max_tokens": 100_000, "ignore_eos": True, "stream": stream}
    request = asyncio.ensure_future(http.post(proxy.url + "/v1/chat/completions", json=body))
    if stream:
        resp = await request
        await resp.content.readany()  # generation has begun
        resp.close()  # the client goes away mid-stream
    else:

        async def running() -> bool:
            return len((await _sim_state(proxy, http))["running"]) == 1

        await _wait_until(running)
        request.cancel()

    async def idle() -> bool:
        state = await _sim_state(proxy, http)
        return state["running"] == [] and state["waiting"] == [] and state["aborted"] >= 1

    await _wait_until(idle)
    async with http.get(proxy.url + "/metrics") as resp:
        assert "autellix_client_disconnects_total" in await resp.text()


async def test_health_ready_metrics(proxy: RunningProxy, http: aiohttp.ClientSession) -> None:
    async with http.get(proxy.url + "/health") as resp:
        assert resp.status == 200
    async with http.get(proxy.url + "/ready") as resp:
        assert resp.status == 200
        assert (await resp.json())["engines"]["sim"]["healthy"] is True
    async with http.post(proxy.url + "/v1/chat/completions", json={**CHAT, "stream": True}) as resp:
        await resp.read()
    async with http.post(
        proxy.url + "/v1/chat/completions", json={**CHAT, "model": "nope"}
    ) as resp:
        await resp.read()
    async with http.get(proxy.url + "/metrics") as resp:
        text = await resp.text()
    assert 'autellix_requests_total{route="/v1/chat/completions",status="200"} 1.0' in text
    assert 'autellix_requests_total{route="/v1/chat/completions",status="404"} 1.0' in text
    assert (
        'autellix_errors_total{route="/v1/chat/completions",type="invalid_request_error"} 1.0'
        in text
    )
    assert 'autellix_time_to_first_token_seconds_count{route="/v1/chat/completions"} 1.0' in text
    assert 'autellix_tokens_total{engine="sim",kind="completion"}' in text
    assert 'autellix_inflight_calls{engine="sim"} 0.0' in text
    # The call to an unknown model failed before it was filed: one program, nothing waiting.
    assert "autellix_programs 1.0" in text
    assert "autellix_gate_waiting_calls 0.0" in text


async def test_response_headers_are_not_doubled(
    proxy: RunningProxy, http: aiohttp.ClientSession
) -> None:
    """The engine echoes its own X-Request-ID; the client must get the proxy's one, once."""
    for stream in (False, True):
        body = {**CHAT, "stream": stream}
        async with http.post(
            proxy.url + "/v1/chat/completions", json=body, headers={"X-Request-Id": "once"}
        ) as resp:
            await resp.read()
            assert resp.headers.getall("X-Request-Id") == ["once"]


async def test_a_body_the_proxy_does_not_change_goes_on_byte_for_byte(
    http: aiohttp.ClientSession,
) -> None:
    app, seen = fake_engine(["m"], Script(body=b"{}"))
    # Spacing, key order and a vendor field: only the client's own bytes keep all of them.
    raw = b'{ "messages": [{"role": "user", "content": "hi"}],  "top_k": 3, "model": "m" }'
    with_program = (
        b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "program": {"id": "p1"}}'
    )
    async with serving(app) as engine_url:
        config = ProxyConfig(port=0, engines=[EngineConfig(name="f", url=engine_url)])
        async with running_proxy(config) as proxy:
            headers = {"Content-Type": "application/json"}
            for body in (raw, with_program):
                async with http.post(
                    proxy.url + "/v1/chat/completions", data=body, headers=headers
                ) as resp:
                    assert resp.status == 200
    assert seen[0].body == raw
    assert orjson.loads(seen[1].body) == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
    }
