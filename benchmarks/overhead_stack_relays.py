"""The naive relay of ``overhead_servers.py``, on other maintained HTTP stacks, for
``overhead_stacks.py``. Each is the same relay: one shared client, the body passed on as it
came, the answer relayed chunk by chunk. The stack comes from the environment:

    OVERHEAD_UPSTREAM=http://127.0.0.1:PORT OVERHEAD_CLIENT=aiohttp|pyreqwest

    python benchmarks/overhead_stack_relays.py PORT            # aiohttp server
    granian --interface rsgi ... overhead_stack_relays:rsgi_app  # granian (Rust) server
    uvicorn --http httptools ... overhead_stack_relays:asgi_app  # uvicorn server, raw ASGI
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

UPSTREAM = os.environ.get("OVERHEAD_UPSTREAM", "")
OnHead = Callable[[int], Awaitable[None]]
OnChunk = Callable[[bytes], Awaitable[None]]
# (status, content type, body) of a whole answer; None once a stream has been relayed
Whole = tuple[int, str, bytes] | None


class AiohttpClient:
    def __init__(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        )

    async def call(self, path: str, body: bytes, on_head: OnHead, on_chunk: OnChunk) -> Whole:
        headers = {"Content-Type": "application/json"}
        async with self.session.post(UPSTREAM + path, data=body, headers=headers) as resp:
            if resp.content_type != "text/event-stream":
                return resp.status, resp.content_type, await resp.read()
            await on_head(resp.status)
            async for data in resp.content.iter_any():
                await on_chunk(data)
            return None


class PyreqwestClient:
    def __init__(self) -> None:
        from pyreqwest.client import ClientBuilder

        builder = ClientBuilder().gzip(False).brotli(False).zstd(False).deflate(False)
        self.client = builder.http1_only().build()

    async def call(self, path: str, body: bytes, on_head: OnHead, on_chunk: OnChunk) -> Whole:
        request = self.client.post(UPSTREAM + path).header("Content-Type", "application/json")
        async with request.body_bytes(body).build_streamed() as resp:
            ctype = resp.get_header("content-type") or ""
            if not ctype.startswith("text/event-stream"):
                return resp.status, ctype, bytes(await resp.bytes())
            await on_head(resp.status)
            reader = resp.body_reader
            while (chunk := await reader.read_chunk()) is not None:
                await on_chunk(bytes(chunk))
            return None


_client: AiohttpClient | PyreqwestClient | None = None


def client() -> AiohttpClient | PyreqwestClient:
    global _client  # built on first use, inside the server's own loop
    if _client is None:
        kind = os.environ.get("OVERHEAD_CLIENT", "aiohttp")
        _client = PyreqwestClient() if kind == "pyreqwest" else AiohttpClient()
    return _client


async def rsgi_app(scope: Any, proto: Any) -> None:
    if scope.proto != "http":
        return
    body = await proto()
    out: Any = None

    async def on_head(status: int) -> None:
        nonlocal out
        out = proto.response_stream(status, [("content-type", "text/event-stream")])

    async def on_chunk(data: bytes) -> None:
        await out.send_bytes(data)

    whole = await client().call(scope.path, body, on_head, on_chunk)
    if whole is not None:
        proto.response_bytes(whole[0], [("content-type", whole[1])], whole[2])


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break

    async def on_head(status: int) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": status, "headers": headers})

    async def on_chunk(data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})

    whole = await client().call(scope["path"], b"".join(parts), on_head, on_chunk)
    if whole is None:
        await send({"type": "http.response.body", "body": b""})
        return
    status, ctype, payload = whole
    headers = [(b"content-type", ctype.encode()), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def serve_aiohttp(port: int) -> None:
    import uvloop
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})

        async def on_head(status: int) -> None:
            out.set_status(status)
            await out.prepare(request)

        async def on_chunk(data: bytes) -> None:
            await out.write(data)

        whole = await client().call(request.path, body, on_head, on_chunk)
        if whole is None:
            await out.write_eof()
            return out
        return web.Response(status=whole[0], body=whole[2], headers={"Content-Type": whole[1]})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    uvloop.run(main())


if __name__ == "__main__":
    serve_aiohttp(int(sys.argv[1]))
