"""SIGTERM drains a real proxy process: no new connections, calls in flight finish within
``shutdown_grace_s``, streams still open then end with an SSE error event, and it says so."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from typing import Any

import aiohttp
import orjson
import pytest

pytestmark = pytest.mark.e2e

MODEL = "sim-llama-3.1-8b"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def chat(max_tokens: int, *, stream: bool) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": "count"}],
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "stream": stream,
    }


async def _up(url: str, http: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            async with http.get(url + "/health") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        assert time.monotonic() < deadline, "the proxy did not come up"
        await asyncio.sleep(0.1)


async def test_sigterm_drains_then_cuts_streams_with_an_error_event() -> None:
    port = _free_port()
    env = {**os.environ, "AUTELLIX_SHUTDOWN_GRACE_S": "1.5", "AUTELLIX_SIM__TIME_SCALE": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "--port",
        str(port),
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await _up(url, http)
            long = await http.post(url + "/v1/chat/completions", json=chat(5000, stream=True))
            assert long.status == 200
            await long.content.readline()  # it is running
            short = asyncio.create_task(
                http.post(url + "/v1/chat/completions", json=chat(20, stream=False))
            )
            await asyncio.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            # No new connections once draining.
            with pytest.raises(aiohttp.ClientConnectionError):
                async with aiohttp.ClientSession() as fresh, fresh.get(url + "/v1/models"):
                    pass
            answer = await short
            assert answer.status == 200
            assert (await answer.json())["usage"]["completion_tokens"] == 20
            body = await long.read()
        last = body.strip().split(b"\n\n")[-1]
        assert last.startswith(b"data: ")
        assert orjson.loads(last[6:])["error"]["code"] == "shutting_down"
        assert await asyncio.wait_for(proc.wait(), 15) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.stderr is not None
    log = (await proc.stderr.read()).decode()
    assert "shutting down" in log
    assert "ending 1 open stream(s) with an error event" in log


async def test_a_stream_waiting_to_resume_also_gets_the_error_event() -> None:
    """A stream the gate preempted waits for an engine slot with no relay running; here the
    slot stays taken (by a long non-streamed call) past the grace. The drain still ends the
    waiting stream with the error event: its client's stream is open."""
    from proxy.config import EngineConfig, GateSettings, ProxyConfig
    from proxy.drain import drain
    from proxy.serve import start_app
    from proxy.server import running_proxy
    from proxy.sim.engine.config import SimEngineConfig
    from proxy.sim.engine.server import create_sim_app

    sim = SimEngineConfig(time_scale=1.0)
    runner, port = await start_app(create_sim_app(sim), "127.0.0.1", 0)
    engine = EngineConfig(
        name="sim",
        url=f"http://127.0.0.1:{port}",
        kind="sim",
        models=sim.served_names(),
        max_inflight=1,
    )
    config = ProxyConfig(port=0, engines=[engine], gate=GateSettings(min_quantum_s=0.2))
    try:
        async with running_proxy(config) as proxy, aiohttp.ClientSession() as http:
            url = proxy.url + "/v1/chat/completions"
            old = {"X-Program-Id": "old"}
            # The old program has been served enough to rank below a fresh one.
            async with http.post(url, json=chat(100, stream=False), headers=old) as resp:
                assert resp.status == 200
            first = await http.post(url, json=chat(5000, stream=True), headers=old)
            await first.content.readline()
            holder = asyncio.create_task(http.post(url, json=chat(5000, stream=False)))
            for _ in range(100):  # until the fresh call has preempted the first
                async with http.get(proxy.url + "/metrics") as resp:
                    if 'autellix_preemptions_total{engine="sim"} 1.0' in await resp.text():
                        break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the first stream was never preempted")
            await drain(proxy, 0.2)
            body = await first.read()
            holder.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await holder
    finally:
        await runner.cleanup()
    last = body.strip().split(b"\n\n")[-1]
    assert orjson.loads(last[6:])["error"]["code"] == "shutting_down"
