"""The proxy's metrics follow Prometheus conventions: TTFT only for streamed calls, arrivals
counted by level (a level is a name, not a quantity), program durations for ended programs,
admissions, and the gate's and engines' state read at scrape time."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from proxy.server import RunningProxy

CHAT = {"model": "sim-llama-3.1-8b", "messages": [{"role": "user", "content": "Hi"}]}
ROUTE = "/v1/chat/completions"


async def samples(
    http: aiohttp.ClientSession, url: str
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_ttft_counts_streamed_calls_only(
    proxy: RunningProxy, http: aiohttp.ClientSession
) -> None:
    for _ in range(2):
        async with http.post(proxy.url + ROUTE, json=CHAT) as resp:
            assert resp.status == 200
    async with http.post(proxy.url + ROUTE, json={**CHAT, "stream": True}) as resp:
        await resp.read()
    got = await samples(http, proxy.url)
    route = frozenset({("route", ROUTE)})
    assert got[("autellix_time_to_first_token_seconds_count", route)] == 1
    assert got[("autellix_request_latency_seconds_count", route)] == 3


async def test_arrivals_by_level_admissions_and_program_duration(
    proxy: RunningProxy, http: aiohttp.ClientSession
) -> None:
    headers = {"X-Program-Id": "run-1"}
    async with http.post(proxy.url + ROUTE, json=CHAT, headers=headers) as resp:
        assert resp.status == 200
    got = await samples(http, proxy.url)
    assert got[("autellix_program_duration_seconds_count", frozenset())] == 0
    async with http.post(
        proxy.url + ROUTE, json=CHAT, headers={**headers, "X-Program-End": "true"}
    ) as resp:
        assert resp.status == 200
    got = await samples(http, proxy.url)
    arrivals = {
        dict(labels)["level"]: v
        for (n, labels), v in got.items()
        if n == "autellix_call_arrivals_total"
    }
    assert arrivals["0"] == 1  # a new program starts at the top
    assert sum(arrivals.values()) == 2
    assert not any(name.startswith("autellix_call_arrival_level") for name, _ in got)
    assert got[("autellix_admissions_total", frozenset({("engine", "sim")}))] == 2
    # The program ended with its second call: one duration observed.
    assert got[("autellix_program_duration_seconds_count", frozenset())] == 1
    assert got[("autellix_program_duration_seconds_sum", frozenset())] > 0
    # The simulated engine reports its load like vLLM; the proxy re-exports what it read.
    assert ("autellix_engine_requests", frozenset({("engine", "sim"), ("state", "running")})) in got
