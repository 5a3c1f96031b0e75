"""The application factory: everything a proxy instance needs, built from one config object."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from proxy.backends.registry import make_backend
from proxy.config import ProxyConfig
from proxy.ids import IdGen
from proxy.kvhints.pool import EnginePool
from proxy.metrics import Metrics
from proxy.middleware import METRICS, error_middleware

log = logging.getLogger("autellix")


@dataclass(slots=True)
class ProxyState:
    """Per-instance state, reachable from handlers as ``request.app[STATE]``."""

    config: ProxyConfig
    metrics: Metrics
    pool: EnginePool
    ids: IdGen = field(default_factory=IdGen)
    session: aiohttp.ClientSession | None = None

    def client(self) -> aiohttp.ClientSession:
        if self.session is None:  # pragma: no cover - only before start-up or after shutdown
            raise RuntimeError("the proxy is not running")
        return self.session


STATE = web.AppKey("autellix_state", ProxyState)


async def _engines_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    # No total timeout on the session: each call sets its own from its engine's config.
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
    state.session = session
    await state.pool.refresh(session)
    for engine in state.pool.engines.values():
        state.metrics.engine_healthy.labels(engine.name).set(1 if engine.healthy else 0)
        if not engine.healthy:
            log.warning(
                "engine %s is not reachable at start-up: %s", engine.name, engine.last_error
            )
    poller = asyncio.create_task(_poll(state), name="autellix-engine-poller")
    try:
        yield
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        await session.close()
        state.session = None


async def _poll(state: ProxyState) -> None:
    while True:
        await asyncio.sleep(state.config.health_interval_s)
        try:
            await state.pool.refresh(state.client())
        except Exception:  # the poller must outlive any one bad answer
            log.exception("engine refresh failed")
        for engine in state.pool.engines.values():
            state.metrics.engine_healthy.labels(engine.name).set(1 if engine.healthy else 0)


def create_app(config: ProxyConfig) -> web.Application:
    """Build a proxy for ``config.engines``. (The embedded simulated engine, used when the
    list is empty, is started by ``proxy.server``, which then passes it in as an engine.)"""
    from proxy import routes  # late: routes import this module for STATE

    metrics = Metrics()
    app = web.Application(middlewares=[error_middleware], client_max_size=config.max_body_bytes)
    app[METRICS] = metrics
    app[STATE] = ProxyState(
        config=config, metrics=metrics, pool=EnginePool(make_backend(e) for e in config.engines)
    )
    app.cleanup_ctx.append(_engines_ctx)
    routes.add_routes(app)
    return app
