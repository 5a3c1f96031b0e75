"""The state one proxy instance keeps, and the keys handlers reach it by.

Its own module, below the app factory and the request handlers, so that both can import it
without importing each other.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from proxy.alarms import Alarms
from proxy.config import ProxyConfig
from proxy.gate import Gate
from proxy.ids import IdGen, UpstreamIds
from proxy.kvhints.learn import Learner
from proxy.kvhints.pool import EnginePool
from proxy.metrics import Metrics
from proxy.relay import connect_timeout
from proxy.scheduler import Scheduler
from proxy.table import ProcessTable


@dataclass(slots=True)
class ProxyState:
    """Per-instance state, reachable from handlers as ``request.app[STATE]``."""

    config: ProxyConfig
    metrics: Metrics
    pool: EnginePool
    scheduler: Scheduler
    gate: Gate
    ids: IdGen = field(default_factory=IdGen)
    upstream_ids: UpstreamIds = field(default_factory=UpstreamIds)
    session: aiohttp.ClientSession | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    learner: Learner | None = None  # learns vLLM engines' block hashes of finished calls
    alarms: Alarms = field(default_factory=Alarms)  # the request path's deadlines
    upstream_timeout: aiohttp.ClientTimeout = field(init=False)  # built once, not per call

    def __post_init__(self) -> None:
        self.upstream_timeout = connect_timeout(self.config.connect_timeout_s)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a fire-and-forget task that the app still owns (kept referenced, awaited at
        shutdown)."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def client(self) -> aiohttp.ClientSession:
        if self.session is None:  # pragma: no cover - only before start-up or after shutdown
            raise RuntimeError("the proxy is not running")
        return self.session


STATE = web.AppKey("autellix_state", ProxyState)
TABLE = web.AppKey("autellix_table", ProcessTable)
