"""Fuzz a real proxy (embedded simulated engine) with many random requests; count answers.

    .venv/bin/python benchmarks/bench_fuzz.py [--cases 12000] [--seed 1] [--concurrency 16]

Prints the count of answers by status, the count of error answers not in the OpenAI shape,
and the count of ERROR log records the proxy wrote (target: 0 5xx, 0 misshapen, 0 ERROR).
The cases are tests/e2e/fuzz.py's, sent byte for byte over raw connections.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.config import ProxyConfig
from proxy.server import running_proxy
from proxy.sim.engine.config import SimEngineConfig
from tests.e2e.fuzz import Case, parse_answer, random_case, raw_request


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def shaped(status: int, content_type: str, body: bytes) -> bool:
    if status < 400:
        return True
    try:
        err = orjson.loads(body)["error"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False
    return content_type.startswith("application/json") and set(err) == {
        "message", "type", "param", "code"
    }  # fmt: skip


async def send(host: str, port: int, case: Case) -> tuple[int, bool]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(raw_request(case))
        await writer.drain()
        answer = parse_answer(await reader.read())
    finally:
        writer.close()
    return answer.status, shaped(answer.status, answer.content_type, answer.body)


async def main(cases: int, seed: int, concurrency: int) -> int:
    counter = _Count()
    logging.getLogger().addHandler(counter)
    config = ProxyConfig(port=0, sim=SimEngineConfig(time_scale=0.001))
    rng = random.Random(seed)
    todo = [random_case(rng) for _ in range(cases)]
    statuses: Counter[int] = Counter()
    misshapen: list[tuple[int, str]] = []
    started = time.perf_counter()
    async with running_proxy(config) as proxy:
        host, _, port = proxy.url.removeprefix("http://").rpartition(":")
        queue = iter(todo)

        async def worker() -> None:
            for case in queue:
                status, ok = await send(host, int(port), case)
                statuses[status] += 1
                if not ok:
                    misshapen.append((status, f"{case.method} {case.path}"))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    print(f"{cases} cases in {elapsed:.1f} s (seed {seed})")
    for status, n in sorted(statuses.items()):
        print(f"  {status}: {n}")
    fives = sum(n for s, n in statuses.items() if s >= 500)
    print(f"5xx: {fives}; errors not in the OpenAI shape: {len(misshapen)}; ERROR logs: "
          f"{len(counter.records)}")  # fmt: skip
    for status, what in misshapen[:10]:
        print(f"  misshapen {status}: {what}")
    for message in counter.records[:10]:
        print(f"  ERROR: {message[:200]}")
    return 1 if fives or misshapen or counter.records else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=12_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.cases, args.seed, args.concurrency)))
