"""The proxy in front of a real vLLM running the scheduler plug-in: calls served through the
vLLM adapter, streaming and not, with the plug-in's record showing what the proxy told it."""

from __future__ import annotations

import openai
import pytest

from proxy.config import EngineConfig, ProxyConfig
from proxy.server import running_proxy
from tests.vllm.conftest import VLLMServer, skip_module_without_vllm

skip_module_without_vllm()

pytestmark = pytest.mark.vllm


async def test_proxy_serves_through_the_vllm_adapter(vllm_server: VLLMServer) -> None:
    engine = EngineConfig(
        name="vllm",
        url=vllm_server.base_url,
        kind="vllm",
        priority=True,
        scheduler_plugin=True,
        control_url=vllm_server.control_addr,
    )
    async with running_proxy(ProxyConfig(port=0, engines=[engine])) as proxy:
        client = openai.AsyncOpenAI(
            base_url=proxy.url + "/v1", api_key="unused", max_retries=0, timeout=120
        )
        async with client:
            headers = {"X-Program-Id": "vllm-agent"}
            whole = await client.completions.with_raw_response.create(
                model=vllm_server.model,
                prompt="agent program",
                max_tokens=8,
                extra_body={"ignore_eos": True},
                extra_headers=headers,
            )
            program_id = whole.headers["X-Program-Id"]
            answer = whole.parse()
            assert answer.usage is not None
            assert answer.usage.completion_tokens == 8
            stream = await client.completions.create(
                model=vllm_server.model, prompt="agent program", max_tokens=6, stream=True,
                extra_body={"ignore_eos": True}, extra_headers=headers,
            )  # fmt: skip
            chunks = [c async for c in stream]
            assert sum(1 for c in chunks if c.choices and c.choices[0].text) >= 1
            assert chunks[-1].choices[0].finish_reason == "length"

    events = await vllm_server.wait_events(
        lambda ev: (
            sum(1 for e in ev if e.get("event") == "finished" and e.get("program") == program_id)
            >= 2
        ),
        what="both calls finished in the plug-in's record",
    )
    mine = [e for e in events if e.get("program") == program_id]
    arrivals = [e for e in mine if e["event"] == "arrived"]
    assert len(arrivals) == 2
    assert {e["req"] for e in arrivals} == {e["req"] for e in mine if e["event"] == "finished"}
    control = [e for e in events if e.get("event") == "control" and e.get("program") == program_id]
    assert control, "the proxy pushed the program's service over the control channel"
    assert control[0]["service"] > 0
