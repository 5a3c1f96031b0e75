"""A scriptable fake engine: records what reaches it and answers what a test tells it to."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict


@dataclass
class Script:
    """What the fake answers on generation routes."""

    status: int = 200
    body: bytes | None = None  # a whole answer (JSON) if set
    chunks: list[bytes] = field(default_factory=list)  # else an SSE answer in these writes
    delay_s: float = 0.0  # pause between chunks
    content_type: str = "text/event-stream"


@dataclass
class Seen:
    path: str
    headers: CIMultiDict[str]
    body: bytes


def fake_engine(
    models: list[str], script: Script | None = None
) -> tuple[web.Application, list[Seen]]:
    seen: list[Seen] = []
    script = script or Script()
    app = web.Application()

    async def record(request: web.Request) -> bytes:
        body = await request.read()
        seen.append(Seen(request.path_qs, CIMultiDict(request.headers), body))
        return body

    async def generate(request: web.Request) -> web.StreamResponse:
        await record(request)
        if script.body is not None or script.status != 200:
            return web.Response(
                status=script.status, body=script.body or b"{}", content_type="application/json"
            )
        resp = web.StreamResponse(headers={"Content-Type": script.content_type})
        await resp.prepare(request)
        for chunk in script.chunks:
            await resp.write(chunk)
            await asyncio.sleep(script.delay_s)
        await resp.write_eof()
        return resp

    async def list_models(request: web.Request) -> web.Response:
        data = [{"id": m, "object": "model", "owned_by": "fake"} for m in models]
        return web.json_response({"object": "list", "data": data})

    async def other(request: web.Request) -> web.Response:
        body = await record(request)
        return web.Response(
            body=orjson.dumps(
                {"echo": request.path_qs, "method": request.method, "body": body.decode()}
            ),
            content_type="application/json",
            headers={"X-Fake": "1"},
        )

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_post("/v1/chat/completions", generate)
    app.router.add_post("/v1/completions", generate)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/v1/{tail:.*}", other)
    return app, seen


def sse(*objs: Any) -> list[bytes]:
    return [b"data: " + orjson.dumps(o) + b"\n\n" for o in objs] + [b"data: [DONE]\n\n"]
