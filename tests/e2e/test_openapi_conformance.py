"""The proxy's answers, on its embedded simulated engine, against OpenAI's API description.

Every body the proxy sends back (whole answers, each chunk of a stream, model cards, errors) is
validated against the component the document gives for it, with ``jsonschema``. The requests
are checked against the document too, so a test cannot pass by sending what OpenAI would not
accept. One deviation is allowed, and named where it is: ``openapi_doc.completion_chunk_deviation``.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from tests.e2e import openapi_doc

pytestmark = pytest.mark.e2e

MODEL = "sim-llama-3.1-8b"
USER = [{"role": "user", "content": "What is the weather in Paris?"}]
CHAT = {"model": MODEL, "messages": USER, "max_tokens": 6}
COMPLETION = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 6}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather forecast for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}
STREAM = {"stream": True, "stream_options": {"include_usage": True}}


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> Any:
    """POST a body the document accepts; the answer as JSON, or a stream's chunks."""
    request = "CreateChatCompletionRequest" if "messages" in body else "CreateCompletionRequest"
    openapi_doc.check(request, body)
    async with http.post(url, json=body) as resp:
        assert resp.status == 200, await resp.text()
        if not body.get("stream"):
            return await resp.json()
        raw = await resp.read()
    events = [e.removeprefix(b"data: ") for e in raw.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    return [orjson.loads(e) for e in events[:-1]]


async def test_chat_answers_conform(proxy_url: str, http: aiohttp.ClientSession) -> None:
    url = proxy_url + "/v1/chat/completions"
    whole = await _post(http, url, {**CHAT, "n": 2, "temperature": 0.7})
    openapi_doc.check("CreateChatCompletionResponse", whole)
    assert [c["message"]["refusal"] for c in whole["choices"]] == [None, None]
    chunks = await _post(http, url, {**CHAT, **STREAM, "n": 2})
    for chunk in chunks:
        openapi_doc.check("CreateChatCompletionStreamResponse", chunk)
    assert chunks[-1]["usage"]["completion_tokens"] == 12


async def test_tool_calls_conform(proxy_url: str, http: aiohttp.ClientSession) -> None:
    url = proxy_url + "/v1/chat/completions"
    body = {**CHAT, "max_tokens": 200, "tools": [WEATHER], "tool_choice": "auto"}
    whole = await _post(http, url, body)
    openapi_doc.check("CreateChatCompletionResponse", whole)
    (choice,) = whole["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert orjson.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])["city"]
    chunks = await _post(http, url, {**body, **STREAM})
    for chunk in chunks:
        openapi_doc.check("CreateChatCompletionStreamResponse", chunk)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert any("tool_calls" in d for d in deltas)


async def test_completions_conform(proxy_url: str, http: aiohttp.ClientSession) -> None:
    url = proxy_url + "/v1/completions"
    # Each form of prompt the document allows, with the number of prompts it holds.
    prompts = [("Once", 1), (["one", "two"], 2), ([1, 2, 3], 1), ([[1, 2], [3]], 2), ([], 0),
               (None, 1), ("", 1)]  # fmt: skip
    for prompt, count in prompts:
        whole = await _post(http, url, {**COMPLETION, "prompt": prompt, "n": 2})
        openapi_doc.check("CreateCompletionResponse", whole)
        assert len(whole["choices"]) == 2 * count
    chunks = await _post(http, url, {**COMPLETION, **STREAM, "prompt": ["a", "b"]})
    finishes = 0
    for chunk in chunks:
        left = [e for e in openapi_doc.errors("CreateCompletionResponse", chunk)
                if not openapi_doc.completion_chunk_deviation(e)]  # fmt: skip
        assert left == [], left[0].message if left else ""
        finishes += sum(c["finish_reason"] is not None for c in chunk["choices"])
    assert finishes == 2


async def test_models_conform(proxy_url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(proxy_url + "/v1/models") as resp:
        openapi_doc.check("ListModelsResponse", await resp.json())
    async with http.get(proxy_url + f"/v1/models/{MODEL}") as resp:
        assert resp.status == 200
        card = await resp.json()
    openapi_doc.check("Model", card)
    assert card["id"] == MODEL


@pytest.mark.parametrize(
    ("method", "path", "data", "status"),
    [
        ("POST", "/v1/chat/completions", b"{not json", 400),
        ("POST", "/v1/chat/completions", orjson.dumps({**CHAT, "stream": "yes"}), 400),
        ("POST", "/v1/chat/completions", orjson.dumps({**CHAT, "model": "gpt-x"}), 404),
        ("POST", "/v1/completions", orjson.dumps({**COMPLETION, "max_tokens": 10**6}), 400),
        ("GET", "/v1/models/gpt-x", None, 404),
        ("GET", "/v1/nowhere", None, 404),
    ],
)
async def test_errors_conform(
    proxy_url: str, http: aiohttp.ClientSession, method: str, path: str, data: Any, status: int
) -> None:
    async with http.request(method, proxy_url + path, data=data) as resp:
        assert resp.status == status
        error = await resp.json()
    openapi_doc.check("ErrorResponse", error)
    if "gpt-x" in path or (data and b"gpt-x" in data):
        assert (error["error"]["type"], error["error"]["code"]) == (
            "invalid_request_error", "model_not_found",
        )  # fmt: skip


def test_the_validator_honours_nullable() -> None:
    # The fields the proxy once refused: nullable in the document, so null is valid...
    openapi_doc.check("CreateChatCompletionRequest", {**CHAT, "stream": None, "n": None})
    openapi_doc.check("CreateCompletionRequest", {**COMPLETION, "prompt": None, "stream": None})
    # ...and only where it says so.
    assert openapi_doc.errors("CreateChatCompletionRequest", {**CHAT, "messages": None})
    assert openapi_doc.errors(
        "ChatCompletionResponseMessage", {"role": "assistant", "content": None}
    )
