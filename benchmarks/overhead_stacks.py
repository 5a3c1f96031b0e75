"""What the naive relay costs on other maintained HTTP stacks, in one run, on one core.

    python benchmarks/overhead_stacks.py [--runs 1] [--calls 1000] [--streams 256]

The harness of ``bench_overhead.py`` (same stub engine, load, cores and CPU readings), with
the proxy replaced by the same naive relay built on other servers and clients
(``overhead_stack_relays.py``): servers aiohttp, granian (RSGI) and uvicorn (httptools, raw
ASGI); clients aiohttp and pyreqwest. A stack whose packages are not installed is skipped and
named. The baseline is ``bench_overhead.py``'s relay (aiohttp on both sides), measured in
the same rounds; ratios are taken within each round, then the median is taken.

It answers one question: how much of the proxy's cost could a change of HTTP stack take
away. The last line reads ``best_stack=<server>+<client> cpu_c64_ratio=<x> cpu_c1_ratio=<x>``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import statistics
import subprocess
import sys
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_overhead import (  # noqa: E402
    EVENTS_PER_STREAM,
    LOAD_CORE,
    PROXY_CORE,
    cpu_ns,
    free_port,
    load,
    peak_rss_kib,
    process,
    wait_ready,
)
from overhead_servers import BURST_MODEL  # noqa: E402

SERVERS = {"aiohttp": "aiohttp", "granian": "granian", "uvicorn": "httptools"}
CLIENTS = {"aiohttp": "aiohttp", "pyreqwest": "pyreqwest"}


def server_args(server: str, port: int) -> list[str]:
    if server == "aiohttp":
        return [str(HERE / "overhead_stack_relays.py"), str(port)]
    if server == "granian":
        return ["-m", "granian", "--interface", "rsgi", "--workers", "1", "--runtime-threads",
                "1", "--loop", "uvloop", "--no-ws", "--http", "1", "--log-level", "warning",
                "--host", "127.0.0.1", "--port", str(port), "overhead_stack_relays:rsgi_app"]  # fmt: skip
    return ["-m", "uvicorn", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--log-level", "warning", "--host", "127.0.0.1", "--port", str(port),
            "overhead_stack_relays:asgi_app"]  # fmt: skip


def tree(pid: int) -> list[int]:
    """The process and its children (granian serves from a worker process)."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [pid, *(int(p) for p in out.split())]


async def cpu_per_call(
    url: str, pids: list[int], calls: int, concurrency: int, stream: bool, model: str = ""
) -> float:
    before = sum(cpu_ns(p) for p in pids)
    await load(url, calls, concurrency, stream, *([model] if model else []))
    return (sum(cpu_ns(p) for p in pids) - before) / calls / 1000


async def one_run(args: argparse.Namespace, stacks: list[tuple[str, str]]) -> list[dict]:
    stub_port = free_port()
    stub = f"http://127.0.0.1:{stub_port}"
    path = "/v1/chat/completions"
    servers = str(HERE / "overhead_servers.py")
    rounds: list[dict] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(LOAD_CORE, servers, "stub", str(stub_port)))
        port = free_port()
        relay = stack.enter_context(process(PROXY_CORE, servers, "relay", str(port), stub))
        targets = {"relay": (f"http://127.0.0.1:{port}{path}", relay.pid)}
        for server, client in stacks:
            port = free_port()
            os.environ.update(OVERHEAD_UPSTREAM=stub, OVERHEAD_CLIENT=client)
            proc = stack.enter_context(
                process(PROXY_CORE, *server_args(server, port), source=str(HERE))
            )
            targets[f"{server}+{client}"] = (f"http://127.0.0.1:{port}{path}", proc.pid)
        async with aiohttp.ClientSession() as session:
            for url, _ in targets.values():
                await wait_ready(session, url)
        for url, _ in targets.values():
            await load(url, 200, 8, False)
            await load(url, 16, 8, True)
        for _ in range(args.rounds):
            out = {}
            for name, (url, pid) in targets.items():
                pids = tree(pid)
                cpu1 = await cpu_per_call(url, pids, args.calls // 2, 1, False)
                cpu64 = await cpu_per_call(url, pids, args.calls, 64, False)
                spaced = await cpu_per_call(url, pids, args.streams, 64, True)
                burst = await cpu_per_call(url, pids, args.streams, 64, True, BURST_MODEL)
                out[name] = {
                    "cpu_c1": cpu1,
                    "cpu_c64": cpu64,
                    "chunk": (spaced - cpu64) / EVENTS_PER_STREAM,
                    "chunk_burst": (burst - cpu64) / EVENTS_PER_STREAM,
                    "rss_mib": sum(peak_rss_kib(p) for p in pids) / 1024,
                }
            rounds.append(out)
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--calls", type=int, default=1000, help="non-streamed calls at c64")
    parser.add_argument("--streams", type=int, default=256, help="streamed calls at c64")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    stacks = []
    for server, server_pkg in SERVERS.items():
        for client, client_pkg in CLIENTS.items():
            missing = [p for p in (server_pkg, client_pkg) if not importlib.util.find_spec(p)]
            if missing:
                print(f"skipped {server}+{client}: {', '.join(missing)} not installed")
            else:
                stacks.append((server, client))
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    runs = [r for _ in range(args.runs) for r in asyncio.run(one_run(args, stacks))]

    def med(target: str, key: str) -> float:
        return statistics.median(r[target][key] for r in runs)

    def ratio(target: str, key: str) -> float:
        return statistics.median(r[target][key] / r["relay"][key] for r in runs)

    print(f"medians of {args.runs} runs x {args.rounds} rounds; each relay pinned to core "
          f"{PROXY_CORE}, stub and load on core {LOAD_CORE}; ratios to the aiohttp relay")  # fmt: skip
    print(f"{'stack':20} {'CPU µs/call c1':>15} {'c64':>8} {'µs/chunk spaced':>16} "
          f"{'at once':>8} {'peak RSS MiB':>13} {'ratio c1':>9} {'c64':>6}")  # fmt: skip
    for name in runs[0]:
        print(
            f"{name:20} {med(name, 'cpu_c1'):15.1f} {med(name, 'cpu_c64'):8.1f} "
            f"{med(name, 'chunk'):16.2f} {med(name, 'chunk_burst'):8.2f} "
            f"{med(name, 'rss_mib'):13.1f} {ratio(name, 'cpu_c1'):9.2f} "
            f"{ratio(name, 'cpu_c64'):6.2f}"
        )
    others = [name for name in runs[0] if name != "relay"]
    if others:
        best = min(others, key=lambda name: ratio(name, "cpu_c64"))
        print(f"best_stack={best} cpu_c64_ratio={ratio(best, 'cpu_c64'):.2f} "
              f"cpu_c1_ratio={ratio(best, 'cpu_c1'):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
