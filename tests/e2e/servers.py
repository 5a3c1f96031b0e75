"""Real servers over loopback for end-to-end tests.

A proxy runs on its own event loop in a background thread, so that tests can drive it with
blocking clients (the OpenAI SDK's sync client, LangChain) as well as async ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

from aiohttp import web

from proxy.config import ProxyConfig
from proxy.serve import start_app
from proxy.server import RunningProxy, start_proxy


class ServerThread:
    """Runs ``start()`` on a private loop until ``stop()``; exposes what it returned."""

    def __init__(
        self, config: ProxyConfig | None = None, app: web.Application | None = None
    ) -> None:
        self._config, self._app = config, app
        self._loop = asyncio.new_event_loop()
        self._ready: Future[str] = Future()
        self._stop: asyncio.Event | None = None
        self.proxy: RunningProxy | None = None
        self._thread = threading.Thread(target=self._run, name="test-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        runner = None
        try:
            if self._app is not None:
                runner, port = await start_app(self._app, "127.0.0.1", 0)
                url = f"http://127.0.0.1:{port}"
            else:
                assert self._config is not None
                self.proxy = await start_proxy(self._config)
                url = self.proxy.url
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(url)
        await self._stop.wait()
        if runner is not None:
            await runner.cleanup()
        if self.proxy is not None:
            await self.proxy.stop()

    def start(self) -> str:
        self._thread.start()
        return self._ready.result(timeout=30)

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the server's loop (to read its state safely)."""
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return done.result(timeout=10)


@contextlib.contextmanager
def serve_in_thread(
    config: ProxyConfig | None = None, app: web.Application | None = None
) -> Iterator[str]:
    server = ServerThread(config, app)
    url = server.start()
    try:
        yield url
    finally:
        server.stop()
