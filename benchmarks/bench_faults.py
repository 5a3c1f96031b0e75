"""What a client sees when its engine dies, hangs or babbles: status, error code and time.

    .venv/bin/python benchmarks/bench_faults.py [--timeout 2]

Each fault engine runs alone behind a proxy, then beside a healthy engine (where a call that
failed before any answer is retried there once). Engine timeouts are set to ``--timeout``
seconds (the defaults are 300 s to the first byte and 60 s of silence).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxy.serve import serving
from proxy.server import running_proxy
from tests.e2e.fakes import Script, fake_engine
from tests.e2e.test_engine_faults import (
    ANSWER,
    CHAT,
    config,
    die,
    engine_app,
    garbage,
    garbage_stream,
    hang,
    silent_stream,
)

FAULTS = {
    "killed": die,
    "hung": hang,
    "garbage": garbage,
    "garbage stream": garbage_stream,
    "silent stream": silent_stream,
}


def outcome(status: int, body: bytes, stream: bool) -> str:
    if stream and status == 200:
        last = body.strip().split(b"\n\n")[-1]
        if last.startswith(b"data: {"):
            payload: Any = orjson.loads(last[6:])
            if "error" in payload:
                return f"200 + SSE error event {payload['error']['code']}"
        return "200 stream"
    if status >= 400:
        return f"{status} {orjson.loads(body)['error']['code']}"
    return f"{status} answered"


async def one(http: aiohttp.ClientSession, url: str, stream: bool) -> tuple[str, float]:
    started = time.perf_counter()
    async with http.post(url + "/v1/chat/completions", json={**CHAT, "stream": stream}) as resp:
        body = await resp.read()
        return outcome(resp.status, body, stream), time.perf_counter() - started


async def main(seconds: float) -> None:
    timeouts = {"first_byte_timeout_s": seconds, "idle_timeout_s": seconds}
    print(f"engine timeouts: {seconds:g} s; each line: outcome, seconds")
    print(f"{'fault':16} {'alone':>42} {'beside a healthy engine':>44}")
    async with aiohttp.ClientSession() as http:
        for name, behaviour in FAULTS.items():
            stream = "stream" in name
            row = []
            for with_good in (False, True):
                good_app, _ = fake_engine(["m"], Script(body=ANSWER))
                async with serving(engine_app(behaviour, [])) as bad, serving(good_app) as good:
                    urls = (bad, good) if with_good else (bad,)
                    async with running_proxy(config(*urls, **timeouts)) as proxy:
                        # With two engines the first call goes to the fault engine (both idle,
                        # listed first); the second shows where calls go after a failure.
                        results = [await one(http, proxy.url, stream) for _ in range(2)]
                first, seconds = results[0]
                row.append(f"{first} ({seconds:.2f} s)")
            print(f"{name:16} {row[0]:>42} {row[1]:>44}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=2.0)
    asyncio.run(main(parser.parse_args().timeout))
