"""Running an aiohttp application on a TCP port: one helper used by the CLI, the embedded
simulated engine and the end-to-end tests, so all of them serve with the same settings."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from aiohttp import web

from proxy.edge import ShapedRunner


class ListenError(OSError):
    """The address could not be bound; the message names it (``cannot listen on host:port``)."""

    def __str__(self) -> str:
        return str(self.strerror)


def install_uvloop() -> None:
    """Use uvloop where it is available (the proxy's one concurrency model, DESIGN.md rule 3)."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``; ``ListenError`` naming the address if it cannot be."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ListenError(exc.errno, f"cannot listen on {where}: {exc.strerror}") from None
    return sock


async def start_app(
    app: web.Application,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    sock: socket.socket | None = None,
) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port`` (port 0 picks a free one), or on ``sock`` already bound;
    return the runner and the port.

    ``handler_cancellation`` is on: when a client goes away, its handler is cancelled at once,
    which closes the upstream connection, so an engine stops generating for nobody. Request
    bodies are decompressed by the app, not the parser (``proxy.edge``).
    """
    # Bind first: a taken port then stops start-up before the app's start-up hooks run (they
    # would otherwise be left half-started, and shut down noisily). A graceful drain
    # (proxy.drain) waits for calls before cleanup; cleanup cancels the rest.
    if sock is None:
        sock = bind(host, port)
    runner = ShapedRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        auto_decompress=False,
        shutdown_timeout=1.0,
    )
    try:
        await runner.setup()
    except BaseException:
        sock.close()
        raise
    site = web.SockSite(runner, sock)
    await site.start()
    return runner, sock.getsockname()[1]


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve ``app`` for the body of an ``async with``; yields its base URL."""
    runner, bound = await start_app(app, host, port)
    try:
        yield f"http://{host}:{bound}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def background(coro: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """Run ``coro`` as a task for the body of an ``async with`` (an app's cleanup context),
    then cancel it and wait for it to end, so no task outlives the app that owns it."""
    task = asyncio.create_task(coro, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
