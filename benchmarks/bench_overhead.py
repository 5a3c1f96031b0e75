"""The proxy's added latency: the same calls made to the simulated engine directly and through
the proxy, interleaved, in one run. Engine and proxy run as separate processes, as deployed.

    python benchmarks/bench_overhead.py [--calls 400] [--max-tokens 8]

Prints median and p99 latency of each path and the proxy's addition (through - direct).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp

MODEL = "sim-llama-3.1-8b"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def process(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "proxy", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(url) as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


async def one_call(
    session: aiohttp.ClientSession, base: str, stream: bool, max_tokens: int
) -> tuple[float, float]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "benchmark the proxy overhead please"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }
    start = time.perf_counter()
    first = None
    async with session.post(base + "/v1/chat/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        async for _ in resp.content.iter_any():
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    return (first or end) - start, end - start


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(calls: int, max_tokens: int, time_scale: float) -> None:
    engine_port, proxy_port = free_port(), free_port()
    engine = f"http://127.0.0.1:{engine_port}"
    proxy = f"http://127.0.0.1:{proxy_port}"
    env_note = f"{calls} calls per path, {max_tokens} tokens each, sim time scale {time_scale}"
    with (
        process(
            "sim-engine",
            "--port",
            str(engine_port),
            "--time-scale",
            str(time_scale),
            "--log-level",
            "warning",
        ),
        process(
            "serve",
            "--port",
            str(proxy_port),
            "--engine",
            f"sim={engine},kind=sim",
            "--log-level",
            "warning",
        ),
    ):
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, engine + "/health")
            await wait_ready(session, proxy + "/ready")
            for stream in (False, True):
                for base in (engine, proxy) * 20:  # warm both paths
                    await one_call(session, base, stream, max_tokens)
                direct: list[tuple[float, float]] = []
                through: list[tuple[float, float]] = []
                for _ in range(calls):
                    direct.append(await one_call(session, engine, stream, max_tokens))
                    through.append(await one_call(session, proxy, stream, max_tokens))
                kind = "streaming" if stream else "non-streaming"
                print(f"\n{kind} chat completions ({env_note})")
                print(f"{'metric':28} {'direct ms':>10} {'proxy ms':>10} {'added ms':>10}")
                for label, idx in (("total latency", 1), ("time to first byte", 0)):
                    d = [x[idx] * 1000 for x in direct]
                    p = [x[idx] * 1000 for x in through]
                    for name, q in (("median", 0.5), ("p99", 0.99)):
                        dv, pv = (
                            (statistics.median(d), statistics.median(p))
                            if q == 0.5
                            else (pct(d, q), pct(p, q))
                        )
                        print(f"{label + ' ' + name:28} {dv:10.2f} {pv:10.2f} {pv - dv:10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--time-scale", type=float, default=0.001)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(run(args.calls, args.max_tokens, args.time_scale))


if __name__ == "__main__":
    main()
