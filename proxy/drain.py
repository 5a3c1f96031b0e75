"""Graceful drain on SIGTERM: stop accepting, let calls finish within ``shutdown_grace_s``,
then end the streams still open with an SSE error event, so that a client can tell a cut
answer from a complete one (and retry), instead of seeing its stream simply stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from proxy.errors import ServiceUnavailable

log = logging.getLogger("autellix.drain")

# After the grace, how long the cut streams get to write their error event and close.
_CUT_WAIT_S = 2.0


class Endable(Protocol):
    def end_with(self, err: ServiceUnavailable) -> None: ...


class Drainable(Protocol):
    """What ``drain`` needs of a running proxy (``proxy.server.RunningProxy``)."""

    app: web.Application
    runners: list[web.AppRunner]

    async def stop(self) -> None: ...


@dataclass(slots=True, eq=False)
class Drain:
    """Requests in flight and streams open, per app; ``draining`` once SIGTERM came."""

    draining: bool = False
    in_flight: int = 0
    streams: set[Endable] = field(default_factory=set)
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def enter(self) -> None:
        """A request (not a probe) began; the edge refuses new ones once ``draining``."""
        self.in_flight += 1
        self.idle.clear()

    def leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle.set()


DRAIN = web.AppKey("autellix_drain", Drain)


def shutting_down(app: web.Application) -> bool:
    drain = app.get(DRAIN)
    return drain is not None and drain.draining


async def drain(proxy: Drainable, grace_s: float) -> None:
    """Drain ``proxy`` (its own listener only; an embedded engine keeps serving the calls
    still running), then stop it."""
    state = proxy.app[DRAIN]
    started = time.monotonic()
    state.draining = True
    runner = proxy.runners[-1]
    for site in list(runner.sites):
        await site.stop()
    log.warning(
        "shutting down: no new connections; %d request(s) in flight get up to %g s to finish",
        state.in_flight,
        grace_s,
    )
    if state.in_flight:
        try:
            await asyncio.wait_for(state.idle.wait(), grace_s)
        except TimeoutError:
            cut = list(state.streams)
            log.warning(
                "shutdown grace of %g s is over: ending %d open stream(s) with an error event; "
                "%d request(s) still in flight are cancelled",
                grace_s,
                len(cut),
                state.in_flight - len(cut),
            )
            err = ServiceUnavailable(
                "the proxy is shutting down; the answer was cut", code="shutting_down"
            )
            for stream in cut:
                stream.end_with(err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.idle.wait(), _CUT_WAIT_S)
    log.warning("drained in %.1f s; stopping", time.monotonic() - started)
    await proxy.stop()
