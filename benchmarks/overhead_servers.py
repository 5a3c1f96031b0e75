"""The two servers ``bench_overhead.py`` runs beside the proxy, each as its own process:

    python benchmarks/overhead_servers.py stub PORT [--interval-ms 2]
    python benchmarks/overhead_servers.py relay PORT UPSTREAM_URL

``stub`` is an OpenAI chat engine that costs next to nothing: a bare asyncio protocol that
answers every chat call with the same completion, or with a stream of 64 one-token chunks
spaced ``--interval-ms`` apart (so that each chunk reaches the proxy in a read of its own, as
an engine's tokens do). Calls for ``BURST_MODEL`` get their chunks all at once instead, so
that a read holds several events (as when an engine outpaces the proxy). It is not the thing
measured, so it is written for low CPU, not for completeness of HTTP.

``relay`` is the baseline: the naive aiohttp relay a team would write in an afternoon, one
shared ClientSession, the body passed on as it came and the answer relayed chunk by chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any

import orjson

MODEL = "stub-model"
BURST_MODEL = "stub-model-burst"
STREAM_TOKENS = 64

_CHUNK = {
    "id": "chatcmpl-stub",
    "object": "chat.completion.chunk",
    "created": 1700000000,
    "model": MODEL,
    "system_fingerprint": None,
}


def _event(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _delta_event(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return _event({**_CHUNK, "choices": [choice]})


_USAGE = {
    "prompt_tokens": 17,
    "completion_tokens": STREAM_TOKENS,
    "total_tokens": 17 + STREAM_TOKENS,
}
STREAM_EVENTS = (
    [_delta_event({"role": "assistant", "content": ""})]
    + [_delta_event({"content": f" t{i:02d}"}) for i in range(STREAM_TOKENS)]
    + [_delta_event({}, "length")]
)
USAGE_EVENT = _event({**_CHUNK, "choices": [], "usage": _USAGE})
DONE_EVENT = b"data: [DONE]\n\n"
WHOLE = orjson.dumps(
    {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": " t00" * 8},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 17, "completion_tokens": 8, "total_tokens": 25},
    }
)
MODELS = orjson.dumps(
    {"object": "list", "data": [{"id": m, "object": "model"} for m in (MODEL, BURST_MODEL)]}
)


def _head(status: str, ctype: bytes, length: int | None) -> bytes:
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\n%s\r\n\r\n" % (status.encode(), ctype, framing)


class StubEngine(asyncio.Protocol):
    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.timers: list[asyncio.TimerHandle] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in self.timers:
            timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4 : end + 4 + length]
            self.buf = self.buf[end + 4 + length :]
            self.answer(head.split(" ", 2), body)

    def answer(self, request_line: list[str], body: bytes) -> None:
        assert self.transport is not None
        method, path = request_line[0], request_line[1]
        if method == "GET":
            payload = MODELS if path.startswith("/v1/models") else b"{}"
            self.transport.write(_head("200 OK", b"application/json", len(payload)) + payload)
            return
        req = orjson.loads(body)
        if not req.get("stream"):
            self.transport.write(_head("200 OK", b"application/json", len(WHOLE)) + WHOLE)
            return
        events = list(STREAM_EVENTS)
        if (req.get("stream_options") or {}).get("include_usage"):
            events.append(USAGE_EVENT)
        events.append(DONE_EVENT)
        self.transport.write(_head("200 OK", b"text/event-stream", None))
        loop = asyncio.get_running_loop()
        interval_s = 0.0 if req.get("model") == BURST_MODEL else self.interval_s
        self.timers = [
            loop.call_later(i * interval_s, self.send, event, i == len(events) - 1)
            for i, event in enumerate(events)
        ]

    def send(self, event: bytes, last: bool) -> None:
        if self.transport is None:
            return
        self.transport.write(
            b"%x\r\n%s\r\n" % (len(event), event) + (b"0\r\n\r\n" if last else b"")
        )


async def serve_stub(port: int, interval_s: float) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: StubEngine(interval_s), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def serve_relay(port: int, upstream: str) -> None:
    import aiohttp
    from aiohttp import web

    session = aiohttp.ClientSession()

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        async with session.post(
            upstream + request.path, data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            if resp.content_type == "text/event-stream":
                out = web.StreamResponse(
                    status=resp.status, headers={"Content-Type": "text/event-stream"}
                )
                await out.prepare(request)
                async for data in resp.content.iter_any():
                    await out.write(data)
                await out.write_eof()
                return out
            return web.Response(
                status=resp.status, body=await resp.read(), content_type=resp.content_type
            )

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        await asyncio.Event().wait()
    finally:
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("what", choices=["stub", "relay"])
    parser.add_argument("port", type=int)
    parser.add_argument("upstream", nargs="?")
    parser.add_argument("--interval-ms", type=float, default=2.0)
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    with contextlib.suppress(KeyboardInterrupt):
        if args.what == "stub":
            asyncio.run(serve_stub(args.port, args.interval_ms / 1000))
        else:
            asyncio.run(serve_relay(args.port, args.upstream))


if __name__ == "__main__":
    main()
