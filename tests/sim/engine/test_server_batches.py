"""The simulated engine over loopback: several choices (``n``), batches of prompts, and the
model cards, as the proxy and OpenAI clients see them."""

from __future__ import annotations

import asyncio

import pytest

from tests.sim.engine.loopback import CHAT, LONG, MODEL, engine, post, sse, state, until


@pytest.mark.parametrize("stream", [True, False])
async def test_n_choices_and_prompt_batches_are_served(stream: bool) -> None:
    options = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    bodies = [
        ("/v1/chat/completions", {**CHAT, "n": 3, "max_tokens": 4, "temperature": 1, **options}),
        ("/v1/completions", {"model": MODEL, "prompt": ["a", "b"], "n": 2, "max_tokens": 4,
                             **options}),
    ]  # fmt: skip
    async with engine() as http:
        for path, body in bodies:
            async with http.post(path, json=body) as resp:
                assert resp.status == 200
                if stream:
                    chunks = [c for c in await sse(resp) if c != "[DONE]"]
                    usage = chunks[-1]["usage"]
                    indexes = {c["choices"][0]["index"] for c in chunks[:-1]}
                    finished = [c for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
                else:
                    answer = await resp.json()
                    usage = answer["usage"]
                    indexes = {c["index"] for c in answer["choices"]}
                    finished = answer["choices"]
            choices = body["n"] * (2 if "prompt" in body else 1)
            assert indexes == set(range(choices))
            assert len(finished) == choices
            assert usage["completion_tokens"] == 4 * choices
        assert (await state(http))["running"] == []


async def test_an_empty_prompt_batch_gets_no_choices() -> None:
    async with engine() as http:
        answer = await post(http, "/v1/completions", {"model": MODEL, "prompt": []})
        assert answer["choices"] == []
        assert answer["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


async def test_aborting_a_request_aborts_all_its_choices() -> None:
    async with engine() as http:
        body = {**LONG, "n": 2}
        call = asyncio.ensure_future(
            http.post("/v1/chat/completions", json=body, headers={"X-Request-Id": "both"})
        )

        async def running() -> bool:
            return len((await state(http))["running"]) == 2

        await until(running)
        out = await post(http, "/abort_requests", {"request_ids": ["chatcmpl-both"]})
        assert out == {"aborted": ["both"]}
        async with await call as resp:
            answer = await resp.json()
        assert [c["finish_reason"] for c in answer["choices"]] == ["abort", "abort"]
        assert (await state(http))["running"] == []


async def test_a_model_is_retrieved_by_id_or_not_found() -> None:
    async with engine(served_model_names=["org/sim", "sim"]) as http:
        for name in ("org/sim", "sim"):
            async with http.get(f"/v1/models/{name}") as resp:
                assert resp.status == 200
                card = await resp.json()
            assert (card["id"], card["object"], card["owned_by"]) == (name, "model", "vllm")
        async with http.get("/v1/models/gpt-x") as resp:
            assert resp.status == 404
            error = (await resp.json())["error"]
        assert (error["type"], error["code"], error["param"]) == (
            "invalid_request_error", "model_not_found", "model"
        )  # fmt: skip
