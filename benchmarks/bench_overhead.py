"""What the proxy costs next to a naive relay, in one run, on one core.

    python benchmarks/bench_overhead.py [--runs 3] [--calls 1000] [--streams 256]

A stub engine (``overhead_servers.py stub``) answers every chat call at once, or streams 64
one-token chunks, either 2 ms apart (each chunk then reaches the proxy in a read of its own,
as an engine's tokens do) or all at once (a read then holds several events). In front of it,
in turn, on the same dedicated core (taskset):
the naive aiohttp relay (one shared ClientSession; ``overhead_servers.py relay``) and the
proxy (policy PLAS, identification on, one engine whose ``max_inflight`` cap never fills).
The stub and this load generator share the other core.

Each run measures, for both targets: CPU per non-streamed call at concurrency 1 and 64, CPU
per streamed call at 64 (each kind of stream), latency at concurrency 1 (minus the stub's own,
measured directly in the same run), and the process's peak RSS. CPU is read from
``/proc/<pid>/task/*/schedstat`` (nanoseconds on CPU, all threads). Per SSE chunk: (CPU of a
streamed call - CPU of a non-streamed call) / events in the stream. Each run measures both
targets in turn, in ``--rounds`` rounds; figures are medians over all rounds, and ratios are
taken within each round, then the median is taken.

Identification is timed in this process: the 50th call of an agent conversation (two new
messages per call: the reply and a tool result), body already parsed, through what the proxy
does with it before scheduling (wire validation, identification, prompt token estimate).

The last line reads ``cpu_ratio_vs_relay=<x> sse_chunk_us=<x> p50_ratio_vs_relay=<x>
identify_50_us=<x>``; the CPU ratio is the worse of concurrency 1 and 64, and the SSE figure
is the all-at-once stream's (the relay reads about 4.4 µs there, as in the harness that set the
5 µs target); the line before it gives the spaced stream's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import glob
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
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from overhead_servers import BURST_MODEL, MODEL, STREAM_EVENTS  # noqa: E402

PROXY_CORE, LOAD_CORE = "0", "1"
EVENTS_PER_STREAM = len(STREAM_EVENTS) + 1  # and [DONE]; the proxy's hidden usage chunk aside


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def process(core: str, *args: str, source: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    env = dict(os.environ)
    if source is not None:  # another copy of the proxy package, e.g. an older commit's
        env["PYTHONPATH"] = source  # (and run from there: `-m` puts the cwd first on the path)
    proc = subprocess.Popen(
        ["taskset", "-c", core, sys.executable, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=source,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_ns(pid: int) -> int:
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        with contextlib.suppress(OSError), open(path) as f:
            total += int(f.read().split()[0])
    return total


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


async def wait_ready(session: aiohttp.ClientSession, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.post(url, json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}) as resp:  # fmt: skip
                if resp.status == 200:
                    await resp.read()
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def body_of(i: int, stream: bool, model: str = MODEL) -> bytes:
    # Every call is a new conversation: the proxy identifies it (inference on) as a new program.
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": f"benchmark the proxy overhead, call {i}"},
    ]
    return orjson.dumps({"model": model, "messages": messages, "max_tokens": 64, "stream": stream})


async def load(
    url: str, calls: int, concurrency: int, stream: bool, model: str = MODEL
) -> list[float]:
    latencies: list[float] = []
    counter = iter(range(calls))
    connector = aiohttp.TCPConnector(limit=0)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for i in counter:
                start = time.perf_counter()
                body = body_of(i, stream, model)
                async with session.post(url, data=body, headers=headers) as resp:
                    async for _ in resp.content.iter_any():
                        pass
                    assert resp.status == 200
                latencies.append(time.perf_counter() - start)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def measure(
    url: str, pid: int, calls: int, concurrency: int, stream: bool, model: str = MODEL
) -> tuple[float, float]:
    """(CPU µs per call of ``pid``, median latency µs)."""
    before = cpu_ns(pid)
    latencies = await load(url, calls, concurrency, stream, model)
    return (cpu_ns(pid) - before) / calls / 1000, statistics.median(latencies) * 1e6


def serve_args(port: int, stub: str) -> list[str]:
    """``proxy serve`` on ``port`` in front of the stub engine at ``stub``: policy PLAS, one
    engine serving both of the stub's models, whose ``max_inflight`` never fills."""
    engine = {"name": "stub", "url": stub, "kind": "openai", "models": [MODEL, BURST_MODEL],
              "max_inflight": 100000}  # fmt: skip
    return ["-m", "proxy", "serve", "--port", str(port), "--engine", orjson.dumps(engine).decode(),
            "--policy", "plas", "--log-level", "warning"]  # fmt: skip


async def one_run(args: argparse.Namespace) -> list[dict[str, dict[str, float]]]:
    stub_port, relay_port, proxy_port, before_port = (free_port() for _ in range(4))
    stub = f"http://127.0.0.1:{stub_port}"
    servers = str(HERE / "overhead_servers.py")
    rounds: list[dict[str, dict[str, float]]] = []
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(LOAD_CORE, servers, "stub", str(stub_port)))
        relay = stack.enter_context(process(PROXY_CORE, servers, "relay", str(relay_port), stub))
        proxy = stack.enter_context(process(PROXY_CORE, *serve_args(proxy_port, stub)))
        path = "/v1/chat/completions"
        targets = {
            "relay": (f"http://127.0.0.1:{relay_port}{path}", relay.pid),
            "proxy": (f"http://127.0.0.1:{proxy_port}{path}", proxy.pid),
        }
        if args.before:
            before = stack.enter_context(
                process(PROXY_CORE, *serve_args(before_port, stub), source=args.before)
            )
            targets["before"] = (f"http://127.0.0.1:{before_port}{path}", before.pid)
        async with aiohttp.ClientSession() as session:
            for url, _ in targets.values():
                await wait_ready(session, url)
        for url, _ in targets.values():  # warm both
            await load(url, 200, 8, False)
            await load(url, 16, 8, True)
            await load(url, 16, 8, True, BURST_MODEL)
        for _ in range(args.rounds):  # the two targets in turn, so that noise hits both
            out: dict[str, dict[str, float]] = {}
            direct = statistics.median(await load(stub + path, args.calls // 4, 1, False)) * 1e6
            for name, (url, pid) in targets.items():
                cpu1, p50 = await measure(url, pid, args.calls // 2, 1, False)
                cpu64, _ = await measure(url, pid, args.calls, 64, False)
                cpus, _ = await measure(url, pid, args.streams, 64, True)
                burst, _ = await measure(url, pid, args.streams, 64, True, BURST_MODEL)
                out[name] = {
                    "cpu_c1": cpu1,
                    "cpu_c64": cpu64,
                    "added_p50": p50 - direct,
                    "chunk": (cpus - cpu64) / EVENTS_PER_STREAM,
                    "chunk_burst": (burst - cpu64) / EVENTS_PER_STREAM,
                    "rss_mib": peak_rss_kib(pid) / 1024,
                }
            rounds.append(out)
    return rounds


def identify_50_us(reps: int = 300) -> tuple[float, int]:
    """Median µs the proxy spends on the 50th call of a conversation before scheduling it."""
    from multidict import CIMultiDict
    from overhead_identify import prepare, start_conversation

    identifier, raw, messages = start_conversation(calls=50)
    headers = CIMultiDict({"Authorization": "Bearer sk-bench", "Content-Type": "application/json"})
    times = []
    for _ in range(reps):
        body = orjson.loads(raw)
        start = time.perf_counter_ns()
        prepare(identifier, headers, body, raw)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000, messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--calls", type=int, default=1000, help="non-streamed calls at c64")
    parser.add_argument("--streams", type=int, default=256, help="streamed calls at c64")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of both targets per run")
    parser.add_argument(
        "--before",
        metavar="DIR",
        help="also measure the proxy package found in DIR (e.g. `git archive <commit> proxy`)",
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    runs = [r for _ in range(args.runs) for r in asyncio.run(one_run(args))]

    def med(target: str, key: str) -> float:
        return statistics.median(r[target][key] for r in runs)

    def ratio(key: str, target: str = "proxy") -> float:
        return statistics.median(r[target][key] / r["relay"][key] for r in runs)

    print(
        f"medians of {args.runs} runs x {args.rounds} rounds; proxy and relay pinned to core "
        f"{PROXY_CORE}, stub and load on core {LOAD_CORE}"
    )
    print(f"{'target':8} {'CPU µs/call c1':>15} {'c64':>8} {'+p50 µs c1':>11} "
          f"{'µs/chunk spaced':>16} {'at once':>8} {'peak RSS MiB':>13}")  # fmt: skip
    for target in runs[0]:
        print(
            f"{target:8} {med(target, 'cpu_c1'):15.1f} {med(target, 'cpu_c64'):8.1f} "
            f"{med(target, 'added_p50'):11.0f} {med(target, 'chunk'):16.2f} "
            f"{med(target, 'chunk_burst'):8.2f} {med(target, 'rss_mib'):13.1f}"
        )
    if "before" in runs[0]:
        print(
            "ratios before/relay: "
            f"CPU c1 {ratio('cpu_c1', 'before'):.2f}, c64 {ratio('cpu_c64', 'before'):.2f}, "
            f"+p50 {ratio('added_p50', 'before'):.2f}, RSS {ratio('rss_mib', 'before'):.2f}"
        )
    cpu_ratio = max(ratio("cpu_c1"), ratio("cpu_c64"))
    print(f"ratios proxy/relay: CPU c1 {ratio('cpu_c1'):.2f}, c64 {ratio('cpu_c64'):.2f}, "
          f"+p50 {ratio('added_p50'):.2f}, RSS {ratio('rss_mib'):.2f}")  # fmt: skip
    ident, messages = identify_50_us()
    print(f"identification of the 50th call ({messages} messages): {ident:.1f} µs")
    print(
        f"CPU µs per SSE chunk, one event per read: proxy {med('proxy', 'chunk'):.2f}, "
        f"relay {med('relay', 'chunk'):.2f}; all at once: proxy {med('proxy', 'chunk_burst'):.2f}, "
        f"relay {med('relay', 'chunk_burst'):.2f}"
    )
    print(
        f"cpu_ratio_vs_relay={cpu_ratio:.2f} sse_chunk_us={med('proxy', 'chunk_burst'):.2f} "
        f"p50_ratio_vs_relay={ratio('added_p50'):.2f} identify_50_us={ident:.1f}"
    )


if __name__ == "__main__":
    main()
