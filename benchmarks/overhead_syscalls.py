"""Where a streamed call's CPU goes: user and system time and read and write calls per call,
for the naive relay and the proxy, in ``bench_overhead.py``'s harness.

    python benchmarks/overhead_syscalls.py [--calls 1000]

For whole answers and for both kinds of stream (events 2 ms apart, and all at once), each
target pinned in turn to one core: user and system time from ``/proc/<pid>/task/*/stat``
(clock ticks, so use enough calls), read and write calls from ``/proc/<pid>/io``. It explains
``bench_overhead.py``'s per-chunk figures: how many reads a stream's events arrive in decides
much of the kernel's share.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_overhead import (  # noqa: E402
    LOAD_CORE,
    PROXY_CORE,
    free_port,
    load,
    process,
    serve_args,
    wait_ready,
)
from overhead_servers import BURST_MODEL, MODEL  # noqa: E402

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def times_s(pid: int) -> tuple[float, float]:
    user = system = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            user, system = user + int(fields[11]), system + int(fields[12])
    return user * TICK_S, system * TICK_S


def io_calls(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/io") as f:
        counts = dict(line.split(": ") for line in f.read().splitlines())
    return int(counts["syscr"]), int(counts["syscw"])


async def run(calls: int) -> None:
    stub_port, relay_port, proxy_port = free_port(), free_port(), free_port()
    stub = f"http://127.0.0.1:{stub_port}"
    servers = str(HERE / "overhead_servers.py")
    path = "/v1/chat/completions"
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(LOAD_CORE, servers, "stub", str(stub_port)))
        relay = stack.enter_context(process(PROXY_CORE, servers, "relay", str(relay_port), stub))
        proxy = stack.enter_context(process(PROXY_CORE, *serve_args(proxy_port, stub)))
        targets = {"relay": (relay_port, relay.pid), "proxy": (proxy_port, proxy.pid)}
        async with aiohttp.ClientSession() as session:
            for port, _ in targets.values():
                await wait_ready(session, f"http://127.0.0.1:{port}{path}")
        print(f"{'target':6} {'answer':14} {'user µs':>8} {'system µs':>10} {'reads':>6} "
              f"{'writes':>7}   (per call, at 64 connections)")  # fmt: skip
        for name, (port, pid) in targets.items():
            url = f"http://127.0.0.1:{port}{path}"
            await load(url, 200, 8, False)
            kinds = (("whole", calls * 4, False, MODEL), ("stream, spaced", calls // 2, True,
                     MODEL), ("stream, at once", calls, True, BURST_MODEL))  # fmt: skip
            for kind, n, stream, model in kinds:
                (user0, sys0), (r0, w0) = times_s(pid), io_calls(pid)
                await load(url, n, 64, stream, model)
                (user1, sys1), (r1, w1) = times_s(pid), io_calls(pid)
                print(f"{name:6} {kind:14} {(user1 - user0) / n * 1e6:8.1f} "
                      f"{(sys1 - sys0) / n * 1e6:10.1f} {(r1 - r0) / n:6.1f} "
                      f"{(w1 - w0) / n:7.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=1000, help="all-at-once streams")
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    asyncio.run(run(args.calls))


if __name__ == "__main__":
    main()
