"""Property tests: requests generated from OpenAI's API description (schemathesis, positive
mode: every body is valid under the document) sent to a running proxy.

1. Behind an engine that accepts anything, the proxy answers every one of them 200: none is
   refused by the proxy's own checks.
2. Behind the simulated engine, every one is answered 200 with a body (or stream) that
   conforms, or refused for one of the limits ``docs/sim-engine.md`` lists (``LIMITS``), with
   a conforming error; never a 5xx.

The only change made to a generated body is its ``model``, set to one the engine serves (model
ids are the server's, not the document's). Both runs are bounded (``max_examples``) and
derandomized, so CI sees the same few hundred bodies in a few seconds.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings

from proxy.config import EngineConfig, ProxyConfig
from proxy.sim.engine.config import SimEngineConfig
from tests.e2e import openapi_doc
from tests.e2e.servers import ServerThread

pytestmark = pytest.mark.e2e

ROUTES = {
    "/chat/completions": ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse"),
    "/completions": ("CreateCompletionResponse", "CreateCompletionResponse"),
}
# (route, optional fields every body carries, fields pinned to a value, examples): plain draws,
# then draws that always carry the fields the proxy and the engine act on (streams included),
# which plain draws seldom hold. AUTELLIX_PROPERTY_SCALE multiplies the examples for a deeper
# run than CI's.
SCALE = int(os.environ.get("AUTELLIX_PROPERTY_SCALE", "1"))
STREAMED = (("stream", True),)
CASES: list[tuple[str, tuple[str, ...], tuple[tuple[str, Any], ...], int]] = [
    ("/chat/completions", (), (), 15 * SCALE),
    ("/chat/completions", ("stream_options", "n", "temperature", "seed"), STREAMED, 15 * SCALE),
    ("/chat/completions", ("tools", "tool_choice", "max_completion_tokens"), (), 15 * SCALE),
    ("/completions", (), (), 20 * SCALE),
    ("/completions", ("stream_options", "n", "max_tokens", "temperature"), STREAMED, 20 * SCALE),
]
IDS = [
    f"{path.strip('/')}:{'streamed+' if pin else ''}{'+'.join(fields) or 'plain'}"
    for path, fields, pin, _ in CASES
]


def _bounded(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# The simulated engine's documented refusals of bodies the document allows (docs/sim-engine.md,
# "Limits"), by the error's param or code.
LIMITS = {
    "max_tokens": "a limit below 1 token (vLLM generates at least one)",
    "max_completion_tokens": "a limit below 1 token (vLLM generates at least one)",
    "context_length_exceeded": "prompt + max_tokens over the model's context (as OpenAI)",
    "stream_options": "stream_options without stream: true (as OpenAI and vLLM)",
    "tool_choice": "a forced or named tool that is not offered (as OpenAI), or a custom tool",
}


def _accepting_engine() -> web.Application:
    """An engine that answers every generation 200, so only the proxy can refuse."""

    async def generate(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        usage = {"prompt_tokens": 1, "completion_tokens": 0, "total_tokens": 1}
        if body.get("stream"):
            tail = orjson.dumps({"id": "x", "choices": [], "usage": usage})
            return web.Response(
                body=b"data: " + tail + b"\n\ndata: [DONE]\n\n", content_type="text/event-stream"
            )
        return web.json_response({"id": "x", "choices": [], "usage": usage})

    async def health(request: web.Request) -> web.Response:
        return web.Response()

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "m", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", generate)
    app.router.add_post("/v1/completions", generate)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    return app


@pytest.fixture(scope="module")
def accepting_proxy() -> Iterator[str]:
    engine = ServerThread(app=_accepting_engine())
    engine_url = engine.start()
    proxy = ServerThread(
        ProxyConfig(port=0, engines=[EngineConfig(name="any", url=engine_url, models=["m"])])
    )
    try:
        yield proxy.start()
    finally:
        proxy.stop()
        engine.stop()


@pytest.fixture(scope="module")
def sim_proxy() -> Iterator[str]:
    # Short answers, fast: a generated n of up to 128 stays cheap.
    sim = SimEngineConfig(time_scale=0.001, output_len_min=1, output_len_max=8)
    proxy = ServerThread(ProxyConfig(port=0, sim=sim))
    try:
        yield proxy.start()
    finally:
        proxy.stop()


def _send(client: httpx.Client, url: str, body: Any) -> httpx.Response:
    # json.dumps, not orjson: the body goes out exactly as generated, whatever it holds.
    return client.post(url, content=json.dumps(body), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(("path", "fields", "pin", "examples"), CASES, ids=IDS)
def test_the_proxy_refuses_no_valid_request(
    accepting_proxy: str,
    path: str,
    fields: tuple[str, ...],
    pin: tuple[tuple[str, Any], ...],
    examples: int,
) -> None:
    tally: Counter[str] = Counter()
    with httpx.Client(base_url=accepting_proxy + "/v1", timeout=30) as client:

        @_bounded(examples)
        @given(openapi_doc.request_bodies(path, fields, pin))
        def run(body: dict[str, Any]) -> None:
            resp = _send(client, path, {**body, "model": "m"})
            assert resp.status_code == 200, f"{resp.text}\nfor {body!r}"
            tally["stream" if body.get("stream") else "whole"] += 1

        run()
    print(f"{path} {fields}: {sum(tally.values())} valid requests, none refused ({dict(tally)})")
    assert sum(tally.values()) >= examples // 2


def _conforms(path: str, resp: httpx.Response, stream: bool) -> None:
    whole, chunk = ROUTES[path]
    if not stream:
        openapi_doc.check(whole, resp.json())
        return
    events = [e.removeprefix("data: ") for e in resp.text.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    # The first and last chunks hold every shape a stream has (role, content or tool call,
    # finish, usage); validating a thousand middles of a 128-choice stream adds nothing.
    for event in events[:-1][:16] + events[:-1][-16:]:
        left = [
            e for e in openapi_doc.errors(chunk, json.loads(event))
            if not (chunk == "CreateCompletionResponse" and openapi_doc.completion_chunk_deviation(e))
        ]  # fmt: skip
        assert not left, left[0]


@pytest.mark.parametrize(("path", "fields", "pin", "examples"), CASES, ids=IDS)
def test_the_simulated_engine_answers_or_names_a_documented_limit(
    sim_proxy: str,
    path: str,
    fields: tuple[str, ...],
    pin: tuple[tuple[str, Any], ...],
    examples: int,
) -> None:
    tally: Counter[str] = Counter()
    with httpx.Client(base_url=sim_proxy + "/v1", timeout=60) as client:

        @_bounded(examples)
        @given(openapi_doc.request_bodies(path, fields, pin))
        def run(body: dict[str, Any]) -> None:
            body = {**body, "model": "sim-llama-3.1-8b"}
            resp = _send(client, path, body)
            if resp.status_code == 200:
                _conforms(path, resp, stream=bool(body.get("stream")))
                tally["answered"] += 1
                return
            assert 400 <= resp.status_code < 500, f"{resp.status_code} {resp.text}\nfor {body!r}"
            openapi_doc.check("ErrorResponse", resp.json())
            error = resp.json()["error"]
            limit = error["code"] if error["code"] in LIMITS else error["param"]
            assert limit in LIMITS, f"undocumented refusal {error}\nfor {body!r}"
            tally[f"refused: {limit}"] += 1

        run()
    print(f"{path} {fields}: {dict(tally)}")
    assert tally["answered"] > 0


MINIMAL = {
    "/chat/completions": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
    "/completions": {"prompt": "hi", "max_tokens": 4},
}
REQUESTS = {
    "/chat/completions": "CreateChatCompletionRequest",
    "/completions": "CreateCompletionRequest",
}


@pytest.mark.parametrize("path", list(MINIMAL))
def test_every_field_the_document_lets_be_null_may_be_null(
    accepting_proxy: str, sim_proxy: str, path: str
) -> None:
    # Each request field, null in a body otherwise minimal: where the document allows that
    # (nullable: true, or a null branch), neither the proxy nor the simulated engine refuses.
    request = REQUESTS[path]
    nullable = sorted(
        field for field in openapi_doc.properties(request)
        if not openapi_doc.errors(request, {"model": "m", **MINIMAL[path], field: None})
    )  # fmt: skip
    assert {"stream", "stream_options", "n", "max_tokens"} <= set(nullable)
    for url, model in ((accepting_proxy, "m"), (sim_proxy, "sim-llama-3.1-8b")):
        with httpx.Client(base_url=url + "/v1", timeout=30) as client:
            for field in nullable:
                resp = _send(client, path, {"model": model, **MINIMAL[path], field: None})
                assert resp.status_code == 200, f"{field}: null refused: {resp.text}"
    print(f"{path}: {len(nullable)} fields may be null, none refused: {', '.join(nullable)}")
