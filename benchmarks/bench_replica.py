"""How many calls one proxy replica serves per core: calls made concurrently through a proxy
in front of a simulated engine, with the proxy process's CPU time read from /proc (Linux),
so the figure does not depend on what else shares the machine. The engine's own CPU time per
call, measured in the same rounds, is printed beside it as the baseline (a server doing the
generation work, with no scheduling).

    python benchmarks/bench_replica.py [--calls 2000] [--concurrency 64] [--rounds 3] [--max-tokens 16]

Prints, per mode (streamed or not), the median over rounds of: proxy CPU ms per call, calls
per proxy CPU-second (= calls/s one core sustains), engine CPU ms per call, and their ratio.
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
from pathlib import Path

import aiohttp

MODEL = "sim-llama-3.1-8b"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def process(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m proxy ARGS`` as a process of its own, as deployed."""
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


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


async def call(session: aiohttp.ClientSession, url: str, stream: bool, i: int, tokens: int) -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"replica benchmark call {i}"}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "stream": stream,
    }
    # A program per client key, as many agents would send.
    headers = {"X-Program-Id": f"bench-{i % 500}"}
    async with session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        await resp.read()


async def burst(url: str, stream: bool, calls: int, concurrency: int, tokens: int) -> float:
    sem = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            async with sem:
                await call(session, url, stream, i, tokens)

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(calls)))
        return time.perf_counter() - start


async def run(args: argparse.Namespace) -> None:
    engine_port, proxy_port = free_port(), free_port()
    engine = f"http://127.0.0.1:{engine_port}"
    proxy = f"http://127.0.0.1:{proxy_port}"
    with (
        process("sim-engine", "--port", str(engine_port), "--time-scale", str(args.time_scale),
                "--log-level", "warning") as eng,
        process("serve", "--port", str(proxy_port), "--engine", f"sim={engine},kind=sim",
                "--log-level", "warning") as prx,
    ):  # fmt: skip
        async with aiohttp.ClientSession() as session:
            await wait_ready(session, engine + "/health")
            await wait_ready(session, proxy + "/ready")
        await burst(proxy, False, 200, args.concurrency, args.max_tokens)  # warm up
        print(
            f"{args.calls} calls per round, {args.concurrency} at once, {args.max_tokens} tokens "
            "each, "
            f"{args.rounds} rounds, sim time scale {args.time_scale}, {os.cpu_count()} CPUs"
        )
        print(
            f"{'mode':10} {'proxy ms/call':>14} {'calls/core-s':>13} {'engine ms/call':>15} "
            f"{'proxy/engine':>13} {'wall calls/s':>13}"
        )
        for stream in (False, True):
            per_call, engine_per_call, wall_rate = [], [], []
            for _ in range(args.rounds):
                p0, e0 = cpu_seconds(prx.pid), cpu_seconds(eng.pid)
                wall = await burst(proxy, stream, args.calls, args.concurrency, args.max_tokens)
                per_call.append((cpu_seconds(prx.pid) - p0) / args.calls)
                engine_per_call.append((cpu_seconds(eng.pid) - e0) / args.calls)
                wall_rate.append(args.calls / wall)
            p, e = statistics.median(per_call), statistics.median(engine_per_call)
            print(
                f"{'stream' if stream else 'whole':10} {p * 1000:14.3f} {1 / p:13.0f} "
                f"{e * 1000:15.3f} {p / e:13.2f} {statistics.median(wall_rate):13.0f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--time-scale", type=float, default=0.001)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
