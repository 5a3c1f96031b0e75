"""The access log (one line per call, when asked for) and the debug lines of --log-level debug."""

from __future__ import annotations

import logging
import time

import aiohttp
import pytest

from proxy.app import STATE
from proxy.config import ProxyConfig
from proxy.server import RunningProxy, running_proxy
from proxy.sim.engine.config import SimEngineConfig

pytestmark = pytest.mark.e2e

CHAT = {"model": "sim-llama-3.1-8b", "messages": [{"role": "user", "content": "Hi"}]}
FAST = SimEngineConfig(time_scale=0.01)


def fields(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in line.split(" "))


async def test_access_log_writes_one_line_per_call(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="autellix.access")
    async with (
        running_proxy(ProxyConfig(port=0, sim=FAST, access_log=True)) as proxy,
        aiohttp.ClientSession() as http,
    ):
        url = proxy.url + "/v1/chat/completions"
        async with http.post(url, json=CHAT, headers={"X-Program-Id": "run-1"}) as resp:
            whole = (resp.headers["X-Program-Id"], (await resp.json())["usage"])
        async with http.post(url, json={**CHAT, "stream": True}) as resp:
            streamed_program = resp.headers["X-Program-Id"]
            await resp.read()
        async with http.post(url, json={**CHAT, "model": "nope"}) as resp:
            assert resp.status >= 400  # refused before it was filed: no call, no line
    lines = [fields(r.getMessage()) for r in caplog.records if r.name == "autellix.access"]
    assert len(lines) == 2
    first, second = lines
    assert first["program"] == whole[0]
    assert first["source"] == "explicit"
    assert (first["status"], first["engine"], first["stream"]) == ("200", "sim", "false")
    assert int(first["prompt_tokens"]) == whole[1]["prompt_tokens"]
    assert int(first["completion_tokens"]) == whole[1]["completion_tokens"]
    assert first["level"] == "0"
    assert first["ttft_s"] == "-"  # a whole answer has no first token to speak of
    assert abs(float(first["arrival"]) - time.time()) < 60  # unix seconds
    assert second["program"] == streamed_program
    assert second["stream"] == "true"
    assert float(second["ttft_s"]) <= float(second["total_s"])


async def test_no_access_log_unless_asked(
    proxy: RunningProxy, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="autellix.access")
    async with http.post(proxy.url + "/v1/chat/completions", json=CHAT) as resp:
        assert resp.status == 200
    assert not [r for r in caplog.records if r.name == "autellix.access"]


async def test_debug_says_what_each_call_went_through(
    proxy: RunningProxy, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="autellix")
    async with http.post(proxy.url + "/v1/chat/completions", json=CHAT) as resp:
        call = resp.headers["X-Call-Id"]
    await proxy.app[STATE].pool.refresh(proxy.app[STATE].client())  # a health poll, now
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(m.startswith(f"call {call} arrived: program ") for m in debug), debug
    assert any(m.startswith(f"call {call} admitted to sim") for m in debug), debug
    assert any(m.startswith("POST /v1/chat/completions -> 200 in ") for m in debug), debug
    assert any(m.startswith("engine sim: healthy") for m in debug), debug
