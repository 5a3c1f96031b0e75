"""Times a user reads are unix seconds: the programs API, the trace file and /v1/models."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import pytest

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from proxy.sim.engine.config import SimEngineConfig

pytestmark = pytest.mark.e2e

CHAT = {"model": "sim-llama-3.1-8b", "messages": [{"role": "user", "content": "Hi"}]}


def near_now(value: float, before: float) -> bool:
    return before - 1 <= value <= time.time() + 1


async def test_programs_trace_and_models_show_unix_times(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    before = time.time()
    config = ProxyConfig(port=0, sim=SimEngineConfig(time_scale=0.01), trace_file=str(trace))
    async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:
        async with http.post(
            proxy.url + "/v1/chat/completions", json=CHAT, headers={"X-Program-Id": "run-1"}
        ) as resp:
            program_id = resp.headers["X-Program-Id"]
        async with http.get(f"{proxy.url}/v1/programs/{program_id}") as resp:
            program = await resp.json()
        async with http.get(proxy.url + "/v1/models") as resp:
            (model,) = (await resp.json())["data"]
    for key in ("created", "last_arrival", "last_completion"):
        assert near_now(program[key], before), (key, program[key])
    assert program["created"] <= program["last_arrival"] <= program["last_completion"]
    (record,) = [json.loads(line) for line in trace.read_text().splitlines()]
    assert near_now(record["arrival"], before)
    assert record["arrival"] <= record["finished"]
    assert near_now(model["created"], before - 1)
    assert model["owned_by"] == "autellix"
    assert model["engines"] == ["sim"]
