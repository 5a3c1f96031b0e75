"""``GET /metrics``: vLLM's metric names, read from the engine at scrape time."""

from __future__ import annotations

from tests.sim.engine.loopback import CHAT, LONG, engine, post


async def test_metrics_use_vllm_names_and_the_first_served_name() -> None:
    async with engine(served_model_names=["a", "b"]) as http:
        await post(http, "/v1/chat/completions", {**CHAT, "model": "b", "max_tokens": 3})
        resp = await http.post("/v1/chat/completions", json={**LONG, "model": "a", "stream": True})
        await resp.content.readline()
        async with http.get("/metrics") as scrape:
            assert scrape.headers["Content-Type"].startswith("text/plain")
            text = await scrape.text()
        resp.close()
    labels = '{model_name="a"}'
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:num_preemptions_total",
        "vllm:request_success_total",
    ):
        assert name in text
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
    assert float(lines["vllm:num_requests_running" + labels]) == 1.0
    assert float(lines["vllm:num_requests_waiting" + labels]) == 0.0
    assert 0.0 < float(lines["vllm:kv_cache_usage_perc" + labels]) < 1.0
    assert float(lines['vllm:request_success_total{finished_reason="length",model_name="a"}']) == 1
    assert float(lines["vllm:prompt_tokens_total" + labels]) > 0
    assert float(lines['sim:num_aborted_requests_total{cause="abort_request",model_name="a"}']) == 0
