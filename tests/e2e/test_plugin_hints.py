"""What the proxy tells an engine that runs the scheduler plug-in: hints in every call's body,
and program service pushed over the control channel as calls finish."""

from __future__ import annotations

import asyncio
import socket

import orjson
import pytest

from proxy.config import EngineConfig, ProxyConfig
from proxy.serve import serving
from proxy.server import running_proxy
from tests.e2e.fakes import Script, fake_engine

zmq_asyncio = pytest.importorskip("zmq.asyncio", reason="pyzmq is not installed")
zmq = pytest.importorskip("zmq")

pytestmark = pytest.mark.e2e

ANSWER = orjson.dumps(
    {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 30, "total_tokens": 40},
    }
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_hints_in_the_body_and_service_over_the_control_channel() -> None:
    import aiohttp

    address = f"tcp://127.0.0.1:{_free_port()}"
    context = zmq_asyncio.Context()
    pull = context.socket(zmq.PULL)
    pull.bind(address)
    app, seen = fake_engine(["m"], Script(body=ANSWER))
    try:
        async with serving(app) as engine_url:
            engine = EngineConfig(
                name="v",
                url=engine_url,
                kind="vllm",
                priority=True,
                scheduler_plugin=True,
                control_url=address,
            )
            async with (
                running_proxy(ProxyConfig(port=0, engines=[engine])) as proxy,
                aiohttp.ClientSession() as http,
            ):
                body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
                for _ in range(2):
                    async with http.post(
                        proxy.url + "/v1/chat/completions",
                        json=body,
                        headers={"X-Program-Id": "agent"},
                    ) as resp:
                        assert resp.status == 200
                        program_id = resp.headers["X-Program-Id"]
                first = orjson.loads(await asyncio.wait_for(pull.recv(), 10))
                second = orjson.loads(await asyncio.wait_for(pull.recv(), 10))
    finally:
        pull.close(linger=0)
        context.term()
    sent = [orjson.loads(s.body) for s in seen]
    assert sent[0]["priority"] == 0
    assert sent[0]["vllm_xargs"]["autellix_program"] == program_id
    assert sent[0]["vllm_xargs"]["autellix_service"] == 0.0
    assert sent[0]["vllm_xargs"]["autellix_call"] != sent[1]["vllm_xargs"]["autellix_call"]
    # The second call starts from the service the first one left its program with.
    assert sent[1]["vllm_xargs"]["autellix_service"] == pytest.approx(first["service"])
    assert first["program"] == second["program"] == program_id
    assert 0 < first["service"] < second["service"]
