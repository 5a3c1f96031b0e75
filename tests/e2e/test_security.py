"""Safe to expose: client keys, tenant isolation, the closed pass-through and engine-owned
scheduling fields, over HTTP against real proxies."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from proxy.config import EngineConfig, ProxyConfig
from proxy.configfile import load_config
from proxy.errors import ConfigError
from proxy.keyconfig import ApiKeyConfig
from proxy.serve import serving
from proxy.server import RunningProxy, running_proxy
from proxy.sim.engine.config import SimEngineConfig
from tests.e2e.fakes import Script, fake_engine

pytestmark = pytest.mark.e2e

MODEL = "sim-llama-3.1-8b"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
FAST = SimEngineConfig(time_scale=0.01)


def keys() -> list[ApiKeyConfig]:
    return [
        ApiKeyConfig.model_validate({"key": "key-alice", "tenant": "alice"}),
        ApiKeyConfig.model_validate(
            {"key": "sha256:" + hashlib.sha256(b"key-bob").hexdigest(), "tenant": "bob"}
        ),
        ApiKeyConfig.model_validate({"key": "key-root", "tenant": "ops", "admin": True}),
    ]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_openai_error(payload: Any, status: int, got: int) -> dict[str, Any]:
    assert got == status, payload
    err = payload["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    return err  # type: ignore[no-any-return]


@pytest.fixture
async def keyed() -> AsyncIterator[RunningProxy]:
    async with running_proxy(ProxyConfig(port=0, sim=FAST, api_keys=keys())) as proxy:
        yield proxy


async def raw_request(url: str, head: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as given (no client-side path normalisation); status and body."""
    u = URL(url)
    reader, writer = await asyncio.open_connection(u.host, u.port)
    try:
        writer.write(head)
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


# -- keys ---------------------------------------------------------------------------------------


async def test_keys_required_except_on_probes(
    keyed: RunningProxy, http: aiohttp.ClientSession
) -> None:
    url = keyed.url + "/v1/chat/completions"
    for headers, code in (
        ({}, "missing_api_key"),
        (bearer("nope"), "invalid_api_key"),
        ({"Authorization": "Basic a2V5LWFsaWNl"}, "missing_api_key"),
    ):
        async with http.post(url, json=CHAT, headers=headers) as resp:
            err = assert_openai_error(await resp.json(), 401, resp.status)
            assert err["type"] == "authentication_error"
            assert err["code"] == code
    for path in ("/v1/models", "/v1/programs", "/v1/embeddings"):
        async with http.get(keyed.url + path) as resp:
            assert_openai_error(await resp.json(), 401, resp.status)
    for path in ("/health", "/ready", "/metrics"):
        async with http.get(keyed.url + path) as resp:
            assert resp.status == 200
    # The plain key and the sha256: form both work.
    for key in ("key-alice", "key-bob"):
        async with http.post(url, json=CHAT, headers=bearer(key)) as resp:
            assert resp.status == 200


async def test_undecodable_bearer_is_401_not_500(keyed: RunningProxy) -> None:
    head = (
        b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n"
        b"Connection: close\r\n\r\n"
    )
    status, body = await raw_request(keyed.url, head)
    assert status in (400, 401)
    assert_openai_error(orjson.loads(body), status, status)


def test_keys_file_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text("- {key: k1, tenant: t1, weight: 2}\n- {key: k2, tenant: t2, admin: true}\n")
    config = load_config(environ={"AUTELLIX_API_KEYS_FILE": str(path)})
    from proxy.auth import KeyTable, load_keys

    table = KeyTable(load_keys(config))
    alice = table.lookup("k1")
    assert alice is not None
    assert alice.tenant == "t1"
    assert alice.weight == 2
    admin = table.lookup("k2")
    assert admin is not None
    assert admin.admin
    assert table.lookup("k3") is None
    assert table.lookup("k1 ") is None
    path.write_text(json.dumps([{"key": "has space", "tenant": "t"}]))
    with pytest.raises(ConfigError, match="api_keys_file"):
        load_keys(config)


async def test_open_proxy_on_a_public_address_warns(caplog: pytest.LogCaptureFixture) -> None:
    from proxy.auth import KeyTable, warn_if_open

    warn_if_open(ProxyConfig(host="0.0.0.0"), KeyTable([]))
    warn_if_open(ProxyConfig(host="127.0.0.1"), KeyTable([]))
    warn_if_open(ProxyConfig(host="0.0.0.0", api_keys=keys()), KeyTable(keys()))
    warnings = [r for r in caplog.records if "no api_keys" in r.getMessage()]
    assert len(warnings) == 1
    assert "0.0.0.0" in warnings[0].getMessage()


# -- isolation ----------------------------------------------------------------------------------


async def _call(http: aiohttp.ClientSession, url: str, key: str, program: str) -> str:
    headers = {**bearer(key), "X-Program-Id": program}
    async with http.post(url + "/v1/chat/completions", json=CHAT, headers=headers) as resp:
        assert resp.status == 200
        return resp.headers["X-Program-Id"]


async def test_tenants_see_and_end_only_their_programs(
    keyed: RunningProxy, http: aiohttp.ClientSession
) -> None:
    url = keyed.url
    alice_id = await _call(http, url, "key-alice", "run-1")
    bob_id = await _call(http, url, "key-bob", "run-1")
    assert alice_id == "alice/run-1"
    assert bob_id == "bob/run-1"

    async with http.get(url + "/v1/programs", headers=bearer("key-alice")) as resp:
        listed = await resp.json()
    assert [p["id"] for p in listed["data"]] == ["alice/run-1"]
    assert listed["total"] == 1
    # The id the client sent finds the program, within the client's tenant.
    async with http.get(url + "/v1/programs/run-1", headers=bearer("key-bob")) as resp:
        assert (await resp.json())["id"] == "bob/run-1"
    # Another tenant's program does not exist for it, by either name.
    for name in ("bob/run-1", "alice/../bob/run-1"):
        async with http.get(url + "/v1/programs/" + name, headers=bearer("key-alice")) as resp:
            assert_openai_error(await resp.json(), 404, resp.status)
        async with http.delete(url + "/v1/programs/" + name, headers=bearer("key-alice")) as resp:
            assert_openai_error(await resp.json(), 404, resp.status)
    # An admin sees all and may end any.
    async with http.get(url + "/v1/programs", headers=bearer("key-root")) as resp:
        assert {p["id"] for p in (await resp.json())["data"]} == {"alice/run-1", "bob/run-1"}
    async with http.delete(url + "/v1/programs/bob/run-1", headers=bearer("key-root")) as resp:
        assert (await resp.json())["deleted"] is True
    async with http.delete(url + "/v1/programs/run-1", headers=bearer("key-alice")) as resp:
        assert (await resp.json())["deleted"] is True


async def test_a_tenant_header_does_not_override_keys_unless_trusted(
    http: aiohttp.ClientSession,
) -> None:
    for trusted in (False, True):
        programs: dict[str, Any] = {"tenant_header": "X-Tenant"} if trusted else {}
        config = ProxyConfig(port=0, sim=FAST, api_keys=keys(), programs=programs)
        async with running_proxy(config) as proxy:
            headers = {**bearer("key-alice"), "X-Tenant": "bob", "X-Program-Id": "p"}
            async with http.post(
                proxy.url + "/v1/chat/completions", json=CHAT, headers=headers
            ) as resp:
                assert resp.headers["X-Program-Id"] == ("bob/p" if trusted else "alice/p")


def test_hash_key_gives_stable_tenant_names() -> None:
    from proxy.app import identify_config
    from proxy.intercept.identify import Identifier

    config = load_config(environ={"AUTELLIX_PROGRAMS__HASH_KEY": "0123456789abcdef0123"})
    names = {
        Identifier(identify_config(config.programs)).tenants.tenant_of(bearer("sk-1"))
        for _ in range(2)
    }
    assert len(names) == 1


# -- the closed pass-through ---------------------------------------------------------------------

TRAVERSALS = [
    "/v1/../sim/state",
    "/v1/%2e%2e/sim/state",
    "/v1/%2E%2E/abort_requests",
    "/v1/.%2e/health",
    "/v1/%252e%252e/sim/state",
    "/v1/models/..%2fsim%2fstate",
    "/v1/models%2f..%2f..%2fsim/state",
    "/v1/..\\sim\\state",
    "/v1/%5c..%5csim/state",
    "/v1/embeddings/./../../sim/state",
    "/v1//sim/state",
    "/v1/%ff%fe",
]


async def test_traversal_in_every_encoding_is_refused() -> None:
    app, seen = fake_engine(["m"])
    async with serving(app) as engine_url:
        engine = EngineConfig.model_validate(
            {"name": "f", "url": engine_url, "api_key": "engine-secret"}
        )
        async with running_proxy(ProxyConfig(port=0, engines=[engine])) as proxy:
            for path in TRAVERSALS:
                head = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                status, body = await raw_request(proxy.url, head)
                assert status in (400, 404), (path, status)
                assert_openai_error(orjson.loads(body), status, status)
    assert seen == []


async def test_only_allowlisted_routes_reach_engines_and_get_the_engine_key(
    http: aiohttp.ClientSession,
) -> None:
    app, seen = fake_engine(["m"])
    async with serving(app) as engine_url:
        engine = EngineConfig.model_validate(
            {"name": "f", "url": engine_url, "api_key": "engine-secret"}
        )
        config = ProxyConfig(port=0, engines=[engine], passthrough_routes=["embeddings", "x/*"])
        async with running_proxy(config) as proxy:
            for path in ("/v1/load_lora_adapter", "/v1/tokenize", "/v1/x", "/v1/x/a/b"):
                async with http.post(proxy.url + path, json={"model": "m"}) as resp:
                    assert_openai_error(await resp.json(), 404, resp.status)
            for path in ("/v1/embeddings", "/v1/x/a%20b"):
                async with http.post(
                    URL(proxy.url + path, encoded=True), json={"model": "m"}
                ) as resp:
                    assert resp.status == 200
    assert [s.path for s in seen] == ["/v1/embeddings", "/v1/x/a%20b"]
    assert all(s.headers["Authorization"] == "Bearer engine-secret" for s in seen)


async def test_default_allowlist_keeps_sim_private_routes_closed(
    http: aiohttp.ClientSession,
) -> None:
    async with running_proxy(ProxyConfig(port=0, sim=FAST)) as proxy:
        for method, path in (
            ("GET", "/v1/sim/state"),
            ("POST", "/v1/abort_requests"),
            ("POST", "/v1/load_lora_adapter"),
        ):
            async with http.request(method, proxy.url + path, json={}) as resp:
                assert_openai_error(await resp.json(), 404, resp.status)


# -- engine scheduling fields -----------------------------------------------------------------


async def test_engine_fields_stripped_unless_the_key_may_steer(
    http: aiohttp.ClientSession,
) -> None:
    app, seen = fake_engine(["m"], Script(body=b"{}"))
    steer = ApiKeyConfig.model_validate(
        {"key": "key-steer", "tenant": "ops", "engine_control": True}
    )
    async with serving(app) as engine_url:
        config = ProxyConfig(
            port=0, engines=[EngineConfig(name="f", url=engine_url)], api_keys=[*keys(), steer]
        )
        async with running_proxy(config) as proxy:
            body = {
                **CHAT,
                "model": "m",
                "priority": -100,
                "vllm_xargs": {"x": 1},
                "rid": "victim",
                "request_id": "victim",
                "temperature": 0.5,
            }
            headers = {"X-Vllm-Priority": "-100", "X-Request-Id": "victim", "X-Priority": "0"}
            for key in ("key-alice", "key-steer"):
                async with http.post(
                    proxy.url + "/v1/chat/completions",
                    json=body,
                    headers={**bearer(key), **headers},
                ) as resp:
                    assert resp.status == 200
                    assert resp.headers["X-Request-Id"] == "victim"
    plain, steered = (orjson.loads(s.body) for s in seen)
    assert not {"priority", "vllm_xargs", "rid", "request_id"} & set(plain)
    assert plain["temperature"] == 0.5
    assert steered["priority"] == -100
    assert steered["rid"] == "victim"
    for s in seen:
        assert s.headers["X-Request-Id"] != "victim"
        assert "X-Vllm-Priority" not in s.headers
        assert "X-Priority" not in s.headers
