"""The proxy records its own traffic as a trace the simulator can replay (off by default)."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.simulator.workloads import from_trace
from proxy.trace import read_trace

pytestmark = pytest.mark.e2e


async def test_finished_calls_are_recorded_and_replayable(tmp_path: Path) -> None:
    trace = tmp_path / "calls.jsonl"
    config = ProxyConfig(port=0, trace_file=str(trace), sim=SimEngineConfig(time_scale=0.01))
    async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:
        for tokens in (4, 7):
            body = {
                "model": "sim-llama-3.1-8b",
                "messages": [{"role": "user", "content": "hi"}],
                "max_tokens": tokens,
                "ignore_eos": True,
            }
            async with http.post(
                proxy.url + "/v1/chat/completions", json=body, headers={"X-Program-Id": "traced"}
            ) as resp:
                assert resp.status == 200
    records = read_trace(trace)
    assert [r.completion_tokens for r in records] == [4, 7]
    assert {r.program for r in records} == {"anonymous/traced"}
    assert all(r.ok and r.prompt_tokens > 0 and r.finished >= r.arrival for r in records)
    programs = from_trace(records)
    assert len(programs) == 1
