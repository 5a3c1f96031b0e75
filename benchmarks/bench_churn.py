"""Identity churn against tenant fairness: five clients share an engine that takes four calls
at once; one of them sends long calls, optionally under a fresh program id each.

    .venv/bin/python benchmarks/bench_churn.py [--seconds 20] [--time-scale 0.5]

A real proxy (default policy, PLAS) runs in front of the simulated engine (``max_inflight:
4``). Every client keeps four streamed calls going; honest clients ask for 100 tokens per call
under one program id per loop, the attacker for 1,000. Tokens are counted as they stream in,
over the measured window only. Printed per scenario: the attacker's share of generated tokens
(target with keys: at most 1/5 + 0.05) and the honest clients' mean tokens, beside the same
setup where the fifth client is honest too (target: no less).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.config import ApiKeyConfig, EngineConfig, ProxyConfig
from proxy.serve import start_app
from proxy.server import running_proxy
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.server import create_sim_app

CLIENTS = ["attacker", "honest-1", "honest-2", "honest-3", "honest-4"]
LOOPS = 4
HONEST_TOKENS = 20
ATTACK_TOKENS = 200
WARMUP_S = 3.0


@dataclass(frozen=True)
class Scenario:
    name: str
    keys: bool
    attack: bool
    rotate: bool


SCENARIOS = [
    Scenario("default, all honest", keys=False, attack=False, rotate=False),
    Scenario("default, attacker rotates ids", keys=False, attack=True, rotate=True),
    Scenario("keys, all honest", keys=True, attack=False, rotate=False),
    Scenario("keys, attacker keeps its ids", keys=True, attack=True, rotate=False),
    Scenario("keys, attacker rotates ids", keys=True, attack=True, rotate=True),
]


async def loop(
    session: aiohttp.ClientSession,
    url: str,
    client: str,
    index: int,
    scenario: Scenario,
    window: tuple[float, float],
    tokens: Counter[str],
) -> None:
    attacker = scenario.attack and client == "attacker"
    n = 0
    start, stop = window
    while time.monotonic() < stop:
        n += 1
        program = f"{client}-{index}-{n}" if attacker and scenario.rotate else f"{client}-{index}"
        body = {
            "model": "sim-llama-3.1-8b",
            "messages": [{"role": "user", "content": f"{client} loop {index} call {n}: go on"}],
            "max_tokens": ATTACK_TOKENS if attacker else HONEST_TOKENS,
            "ignore_eos": True,
            "stream": True,
        }
        headers = {"Authorization": f"Bearer key-{client}", "X-Program-Id": program}
        async with session.post(url, json=body, headers=headers) as resp:
            async for line in resp.content:
                now = time.monotonic()
                if now >= stop:
                    break
                if now >= start and line.startswith(b"data: {") and b'"content"' in line:
                    tokens[client] += 1


async def run(scenario: Scenario, seconds: float, time_scale: float) -> Counter[str]:
    sim = SimEngineConfig(time_scale=time_scale)
    runner, port = await start_app(create_sim_app(sim), "127.0.0.1", 0)
    engine = EngineConfig(
        name="sim",
        url=f"http://127.0.0.1:{port}",
        kind="sim",
        models=sim.served_names(),
        max_inflight=4,
    )
    keys = [ApiKeyConfig.model_validate({"key": f"key-{c}", "tenant": c}) for c in CLIENTS]
    config = ProxyConfig(port=0, engines=[engine], api_keys=keys if scenario.keys else [])
    tokens: Counter[str] = Counter()
    try:
        async with running_proxy(config) as proxy, aiohttp.ClientSession() as session:
            now = time.monotonic()
            window = (now + WARMUP_S, now + WARMUP_S + seconds)
            url = proxy.url + "/v1/chat/completions"
            await asyncio.gather(
                *(
                    loop(session, url, client, i, scenario, window, tokens)
                    for client in CLIENTS
                    for i in range(LOOPS)
                )
            )
    finally:
        await runner.cleanup()
    return tokens


async def main(seconds: float, time_scale: float) -> None:
    baseline: dict[bool, float] = {}
    print(f"{len(CLIENTS)} clients x {LOOPS} streams, engine max_inflight 4, {seconds:g} s each")
    print(f"{'scenario':34} {'attacker share':>14} {'honest mean':>12} {'vs all honest':>14}")
    for scenario in SCENARIOS:
        tokens = await run(scenario, seconds, time_scale)
        total = sum(tokens.values()) or 1
        honest = [tokens[c] for c in CLIENTS[1:]]
        mean = sum(honest) / len(honest)
        if not scenario.attack:
            baseline[scenario.keys] = mean
        ratio = mean / baseline[scenario.keys] if baseline.get(scenario.keys) else float("nan")
        share = tokens["attacker"] / total
        print(f"{scenario.name:34} {share:14.3f} {mean:12.0f} {ratio:14.2f}")
    print(f"target with keys: attacker share <= {1 / len(CLIENTS) + 0.05:.2f}, honest ratio >= 1")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--time-scale", type=float, default=0.5)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.time_scale))
