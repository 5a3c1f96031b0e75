"""How long a short program waits behind long ones, with and without each enforcement tier.

A simulated engine (vLLM-like, at most 4 running sequences) is saturated by 6 long programs,
each of which made a 300-token call and is now in a long streamed call; then a short agent
program makes 3 calls in a row. Scenarios, each run ``--runs`` times in this one process:

  none   policy fcfs, no engine priority, no gate: the engine's FCFS order
  tier1  policy plas, the call's level sent in the engine's priority field (reorders the
         engine's waiting queue only)
  tier2  policy plas, engine priority, and the proxy's gate (max_inflight 4) with preemption
         and transparent resume

Prints the short program's completion time and its first call's time to first token (how long
it was stuck; medians over runs, in simulated seconds: real seconds / time scale), and ratios
against ``none``.

    python benchmarks/bench_tiers.py [--runs 3] [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import aiohttp

from proxy.config import EngineConfig, GateSettings, ProxyConfig
from proxy.serve import serving
from proxy.server import running_proxy
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.server import create_sim_app

MODEL = "sim-llama-3.1-8b"
LONG_CALLS, LONG_WARMUP, LONG_TOKENS = 6, 300, 1500
SHORT_CALLS, SHORT_TOKENS = 3, 30


def scenario_config(name: str, sim_url: str, time_scale: float) -> ProxyConfig:
    if name == "none":
        engine = EngineConfig(name="sim", url=sim_url, kind="sim", priority=False)
        return ProxyConfig(
            port=0, engines=[engine], policy="fcfs", gate=GateSettings(preempt=False)
        )
    if name == "tier1":
        engine = EngineConfig(name="sim", url=sim_url, kind="sim", priority=True)
        return ProxyConfig(
            port=0, engines=[engine], policy="plas", gate=GateSettings(preempt=False)
        )
    engine = EngineConfig(name="sim", url=sim_url, kind="sim", priority=True, max_inflight=4)
    # A quantum of half a simulated second, in real seconds.
    gate = GateSettings(preempt=True, min_quantum_s=0.5 * time_scale)
    return ProxyConfig(port=0, engines=[engine], policy="plas", gate=gate)


async def stream_call(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], program: str
) -> float:
    """Returns the time to the first token."""
    start = time.perf_counter()
    first = None
    async with http.post(url, json=body, headers={"X-Program-Id": program}) as resp:
        assert resp.status == 200, await resp.text()
        async for line in resp.content:
            if (
                first is None
                and b'"content":"' in line.replace(b" ", b"")
                and b'"content":""' not in line.replace(b" ", b"")
            ):
                first = time.perf_counter()
    return (first or time.perf_counter()) - start


async def run_once(name: str, time_scale: float) -> tuple[float, float]:
    sim = SimEngineConfig(time_scale=time_scale, max_num_seqs=4, max_num_batched_tokens=2048)
    async with (
        serving(create_sim_app(sim)) as sim_url,
        running_proxy(scenario_config(name, sim_url, time_scale)) as proxy,
        aiohttp.ClientSession() as http,
    ):
        url = proxy.url + "/v1/chat/completions"

        def body(text: str, tokens: int) -> dict[str, Any]:
            return {
                "model": MODEL,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": tokens,
                "ignore_eos": True,
                "stream": True,
            }

        in_second_call = asyncio.Semaphore(0)

        async def long_program(i: int) -> None:
            await stream_call(http, url, body(f"long {i} warm-up", LONG_WARMUP), f"long-{i}")
            second = asyncio.create_task(
                stream_call(http, url, body(f"long {i}", LONG_TOKENS), f"long-{i}")
            )
            in_second_call.release()
            await second

        longs = [asyncio.create_task(long_program(i)) for i in range(LONG_CALLS)]
        for _ in range(LONG_CALLS):
            await in_second_call.acquire()
        await asyncio.sleep(100 * 0.016 * time_scale)  # the long calls are under way
        start = time.perf_counter()
        ttfts = []
        for turn in range(SHORT_CALLS):
            ttfts.append(
                await stream_call(http, url, body(f"short turn {turn}", SHORT_TOKENS), "short")
            )
        short_total = time.perf_counter() - start
        await asyncio.gather(*longs)
    return short_total / time_scale, ttfts[0] / time_scale


async def main(runs: int, time_scale: float) -> None:
    results: dict[str, list[tuple[float, float]]] = {}
    for name in ("none", "tier1", "tier2"):
        results[name] = [await run_once(name, time_scale) for _ in range(runs)]
    base_total = statistics.median(r[0] for r in results["none"])
    base_ttft = statistics.median(r[1] for r in results["none"])
    print(
        f"short program ({SHORT_CALLS} calls x {SHORT_TOKENS} tokens) behind {LONG_CALLS} long programs ({LONG_WARMUP} then {LONG_TOKENS} tokens)"
    )
    print(
        f"engine: simulated Llama-3.1-8B/A100, max 4 running; medians of {runs} runs; simulated seconds"
    )
    print(f"{'scenario':10} {'completion s':>13} {'first TTFT s':>13} {'vs none':>9}")
    for name, rows in results.items():
        total = statistics.median(r[0] for r in rows)
        ttft = statistics.median(r[1] for r in rows)
        print(
            f"{name:10} {total:13.2f} {ttft:13.3f} {base_total / total:8.1f}x   (first TTFT {base_ttft / ttft:.1f}x)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--time-scale", type=float, default=0.05)
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.time_scale))
