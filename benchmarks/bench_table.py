"""Memory of the process table and cost of identifying a call.

    .venv/bin/python benchmarks/bench_table.py [--programs 1000000] [--repeat 2000]

Prints medians. Memory is measured with tracemalloc over the table alone, filled with idle
programs that each made one call (the state most programs spend their life in), with ids
shaped like the identifier's. Identification is timed per call on bodies already parsed, with
headers in aiohttp's case-insensitive mapping, as the request path will call it.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.ids import IdGen
from proxy.intercept.identify import Identifier, IdentifyConfig
from proxy.table import ProcessTable, TableConfig


def bytes_per_program(n: int) -> float:
    ids = IdGen("3f9a12c4")
    program_ids = [ids.next("p") for _ in range(n)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    table = ProcessTable(TableConfig(max_programs=n))
    now = 0.0
    for pid in program_ids:
        now += 0.001
        _, call = table.begin(pid, now=now, prompt_tokens=700)
        table.start(call, "engine-0", now)
        table.tokens(call, 35, now)
        table.finish(call, now, prompt_tokens=731, completion_tokens=35)
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    # The id strings are counted too: the table keeps them alive after the list goes.
    id_bytes = sum(len(p) + 49 for p in program_ids)
    assert len(table) == n
    return (used + id_bytes) / n


def bytes_per_prefix_entry(n: int) -> float:
    ident = Identifier()
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for k in range(n):
        ident.prefixes.add(k, {"role": "assistant", "content": "ok"}, "p-1")
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / n


def conversation(turns: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a research agent. " * 80},
        {"role": "user", "content": "Find the population of the ten largest cities. " * 6},
    ]
    for t in range(turns):
        args = orjson.dumps({"query": f"population of city {t}", "limit": 5}).decode()
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{t:04d}",
                        "type": "function",
                        "function": {"name": "search", "arguments": args},
                    }
                ],
            }
        )
        messages.append(
            {"role": "tool", "tool_call_id": f"call_{t:04d}", "content": "result text " * 60}
        )
    return messages


def median_us(fn: Callable[[], object], repeat: int) -> float:
    for _ in range(min(repeat, 100)):
        fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t0)
    return statistics.median(samples) / 1000


def identification(repeat: int) -> dict[str, float]:
    ident = Identifier(IdentifyConfig())
    auth = {"Authorization": "Bearer sk-test-0123456789", "Content-Type": "application/json"}

    def headers(extra: dict[str, str]) -> CIMultiDictProxy[str]:
        return CIMultiDictProxy(CIMultiDict({**auth, **extra}))

    turns = 20
    history = conversation(turns)
    # Serve the conversation turn by turn so the index holds its replies, as it would live.
    first = history[:2]
    for t in range(turns + 1):
        messages = history[: 2 + 2 * t]
        got = ident.identify(headers({}), {"model": "m", "messages": messages})
        if t < turns:
            ident.record_reply(got, history[2 + 2 * t])
    last_body = {"model": "m", "messages": history}
    assert ident.identify(headers({}), last_body).source == "inferred"
    new_body = {"model": "m", "messages": first}
    explicit_h = headers({"X-Program-Id": "agent-42", "X-Thread-Id": "main"})
    session_h = headers({"x-claude-code-session-id": "1f6c1f7e-8a7b-4c0e-9a43-1d2f3b4c5d6e"})
    plain_h = headers({})
    reply = history[2]
    got = ident.identify(plain_h, new_body)
    return {
        "explicit header": median_us(lambda: ident.identify(explicit_h, last_body), repeat),
        "session header": median_us(lambda: ident.identify(session_h, last_body), repeat),
        f"inferred, {turns}-turn conversation ({len(history)} messages)": median_us(
            lambda: ident.identify(plain_h, last_body), repeat
        ),
        "new, first call (2 messages)": median_us(
            lambda: ident.identify(plain_h, new_body), repeat
        ),
        "record_reply (one tool-call reply)": median_us(
            lambda: ident.record_reply(got, reply), repeat
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--programs", type=int, default=1_000_000)
    parser.add_argument("--prefix-entries", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args(argv)
    print("identification cost per call, median (us):")
    for name, us in identification(args.repeat).items():
        print(f"  {name:<55} {us:8.2f}")
    print(f"process table, {args.programs:,} idle programs:")
    print(f"  bytes per program {bytes_per_program(args.programs):,.0f}")
    print(f"inference index, {args.prefix_entries:,} entries:")
    print(f"  bytes per entry {bytes_per_prefix_entry(args.prefix_entries):,.0f}")


if __name__ == "__main__":
    main()
