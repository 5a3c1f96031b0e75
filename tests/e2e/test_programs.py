"""Programs through the real proxy: identification, the process table's accounting, release
and collection, and the admin API, against the simulated engine."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
import pytest

from proxy.config import EngineConfig, ProgramsConfig, ProxyConfig
from proxy.serve import serving
from proxy.server import RunningProxy, running_proxy
from proxy.sim.engine.config import SimEngineConfig
from proxy.state import STATE
from tests.e2e.fakes import Script, fake_engine

pytestmark = pytest.mark.e2e

MODEL = "sim-llama-3.1-8b"


def _chat(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": messages, "max_tokens": 6, **extra}


async def _post(
    http: aiohttp.ClientSession, proxy: RunningProxy, body: dict[str, Any], **headers: str
) -> tuple[aiohttp.ClientResponse, Any]:
    async with http.post(proxy.url + "/v1/chat/completions", json=body, headers=headers) as resp:
        raw = await resp.read()
        if body.get("stream"):
            return resp, raw
        return resp, orjson.loads(raw)


async def _program(
    http: aiohttp.ClientSession, proxy: RunningProxy, program_id: str
) -> tuple[int, Any]:
    async with http.get(proxy.url + "/v1/programs/" + quote(program_id, safe="")) as resp:
        return resp.status, await resp.json()


async def test_every_answer_names_its_program_and_call(
    proxy: RunningProxy, http: aiohttp.ClientSession
) -> None:
    resp, _ = await _post(http, proxy, _chat([{"role": "user", "content": "hello"}]))
    program_id, call_id = resp.headers["X-Program-Id"], resp.headers["X-Call-Id"]
    assert resp.headers["X-Autellix-Priority"] == "0"  # a new program starts in the top queue
    # Passing the program id back explicitly continues the same program.
    resp2, _ = await _post(
        http,
        proxy,
        _chat([{"role": "user", "content": "unrelated"}]),
        **{"X-Program-Id": program_id},
    )
    assert resp2.headers["X-Program-Id"] == program_id
    assert resp2.headers["X-Call-Id"] != call_id
    status, program = await _program(http, proxy, program_id)
    assert status == 200
    assert program["calls"] == 2
    assert program["identified_by"] == "new"


async def test_conversation_is_inferred_without_any_header(
    proxy: RunningProxy, http: aiohttp.ClientSession
) -> None:
    turn1 = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "plan a trip"}]
    resp, answer = await _post(http, proxy, _chat(turn1))
    reply = answer["choices"][0]["message"]
    turn2 = [
        *turn1,
        {"role": "assistant", "content": reply["content"]},
        {"role": "user", "content": "and then?"},
    ]
    resp2, _ = await _post(http, proxy, _chat(turn2))
    assert resp2.headers["X-Program-Id"] == resp.headers["X-Program-Id"]
    # Same first turn, but not the reply this proxy gave: another program.
    other = [
        *turn1,
        {"role": "assistant", "content": "something else"},
        {"role": "user", "content": "and then?"},
    ]
    resp3, _ = await _post(http, proxy, _chat(other))
    assert resp3.headers["X-Program-Id"] != resp.headers["X-Program-Id"]
    async with http.get(proxy.url + "/metrics") as m:
        text = await m.text()
    assert 'autellix_calls_total{source="inferred"} 1.0' in text
    assert 'autellix_calls_total{source="new"} 2.0' in text


@pytest.mark.parametrize("stream", [False, True])
async def test_service_is_accounted_from_real_usage(
    proxy: RunningProxy, http: aiohttp.ClientSession, stream: bool
) -> None:
    body = _chat(
        [{"role": "user", "content": "count"}], max_tokens=20, ignore_eos=True, stream=stream
    )
    resp, _ = await _post(http, proxy, body, **{"X-Program-Id": "svc"})
    status, program = await _program(http, proxy, resp.headers["X-Program-Id"])
    assert status == 200
    assert program["completion_tokens"] == 20
    assert program["prompt_tokens"] > 0
    table = proxy.app[STATE].scheduler.table.config
    expected = 20 * table.decode_token_s + program["prompt_tokens"] * table.prefill_token_s
    assert program["service"] == pytest.approx(expected)
    # A second call starts where the program's service stands: a lower queue, never a higher one.
    resp2, _ = await _post(http, proxy, body, **{"X-Program-Id": "svc"})
    assert int(resp2.headers["X-Autellix-Priority"]) >= int(resp.headers["X-Autellix-Priority"])


async def test_program_end_releases_the_entry(
    proxy: RunningProxy, http: aiohttp.ClientSession
) -> None:
    resp, _ = await _post(
        http, proxy, _chat([{"role": "user", "content": "a"}]), **{"X-Program-Id": "short"}
    )
    assert (await _program(http, proxy, resp.headers["X-Program-Id"]))[0] == 200
    await _post(
        http,
        proxy,
        _chat([{"role": "user", "content": "b"}]),
        **{"X-Program-Id": "short", "X-Program-End": "true"},
    )
    status, err = await _program(http, proxy, resp.headers["X-Program-Id"])
    assert status == 404
    assert err["error"]["code"] == "program_not_found"


async def test_idle_programs_are_collected() -> None:
    programs = ProgramsConfig(idle_ttl_s=0.05, collect_interval_s=0.05)
    config = ProxyConfig(port=0, programs=programs, sim=SimEngineConfig(time_scale=0.01))
    async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:
        resp, _ = await _post(http, proxy, _chat([{"role": "user", "content": "x"}]))
        program_id = resp.headers["X-Program-Id"]
        for _ in range(100):
            if (await _program(http, proxy, program_id))[0] == 404:
                break
            await asyncio.sleep(0.02)
        assert (await _program(http, proxy, program_id))[0] == 404
        assert proxy.app[STATE].scheduler.table.collected >= 1


async def test_admin_list_and_delete(proxy: RunningProxy, http: aiohttp.ClientSession) -> None:
    for name in ("a", "b"):
        await _post(
            http, proxy, _chat([{"role": "user", "content": name}]), **{"X-Program-Id": name}
        )
    async with http.get(proxy.url + "/v1/programs?sort=calls&order=asc&limit=1") as resp:
        page = await resp.json()
    assert page["total"] == 2
    assert len(page["data"]) == 1
    assert page["has_more"] is True
    async with http.get(proxy.url + "/v1/programs?limit=0") as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["param"] == "limit"
    async with http.delete(proxy.url + "/v1/programs/" + quote("anonymous/a", safe="")) as resp:
        assert resp.status == 200
    assert (await _program(http, proxy, "anonymous/a"))[0] == 404


async def test_program_object_in_body_is_removed_before_the_engine(
    http: aiohttp.ClientSession,
) -> None:
    app, seen = fake_engine(["m"], Script(body=b'{"choices": [], "usage": null}'))
    async with serving(app) as engine_url:
        config = ProxyConfig(port=0, engines=[EngineConfig(name="f", url=engine_url)])
        async with running_proxy(config) as proxy:
            body = {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "program": {"id": "agent-7", "thread": "t1"},
            }
            async with http.post(proxy.url + "/v1/chat/completions", json=body) as resp:
                assert resp.status == 200
                assert resp.headers["X-Program-Id"] == "anonymous/agent-7"
            bad = {**body, "program": "agent-7"}
            async with http.post(proxy.url + "/v1/chat/completions", json=bad) as resp:
                assert resp.status == 400
                assert (await resp.json())["error"]["param"] == "program"
    sent = orjson.loads(seen[0].body)
    assert "program" not in sent
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("policy", "settings", "message"),
    [
        ("srpt", {}, "clairvoyant"),
        ("nope", {}, "nope"),
        ("plas", {"levles": 3}, "levles"),
    ],
)
def test_bad_policy_stops_start_up_with_a_clear_error(
    policy: str, settings: dict[str, Any], message: str
) -> None:
    from proxy.app import create_app
    from proxy.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        create_app(ProxyConfig(port=0, policy=policy, policy_config=settings))


@pytest.mark.parametrize(("temperature", "programs"), [(0.7, 2), (0, 1)])
async def test_identical_runs_stay_apart_when_sampled(
    proxy: RunningProxy, http: aiohttp.ClientSession, temperature: float, programs: int
) -> None:
    # Two agent runs that start alike: sampled answers differ, so each run's next turn follows
    # its own reply and stays its own program; greedy answers are the same, and the two runs
    # cannot be told apart (the later one takes the conversation over).
    question = [{"role": "user", "content": "Plan a trip to Lisbon."}]
    seconds = []
    for _ in range(2):
        _, first = await _post(http, proxy, _chat(question, temperature=temperature))
        reply = first["choices"][0]["message"]
        turn = [*question, {"role": "assistant", "content": reply["content"]},
                {"role": "user", "content": "And then?"}]  # fmt: skip
        seconds.append(turn)
    ids = set()
    for turn in seconds:
        resp, _ = await _post(http, proxy, _chat(turn, temperature=temperature))
        ids.add(resp.headers["X-Program-Id"])
    assert len(ids) == programs
