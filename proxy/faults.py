"""Engines that hang, go silent or babble: the timers and rules that keep a call from waiting
on them for nothing.

``first_byte_timeout_s`` bounds the wait for an engine's answer to begin once the call was sent
(so time held in the proxy's own gate never counts); ``idle_timeout_s`` bounds the silence
inside an answer; ``timeout_s`` the whole call at the engine, checked by those same timers
(one per phase of a call, none per chunk). ``retry_elsewhere`` decides whether a call whose engine failed before
answering may go to another engine: the client has received nothing from it, so nothing is
lost by sending the call again.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Protocol

import aiohttp

from proxy.errors import ProxyError
from proxy.kvhints.pool import EnginePool, EngineState
from proxy.metrics import Metrics


class Outcome(Protocol):
    """What ``settle`` reads of a finished engine call (``proxy.relay.Outcome``)."""

    @property
    def upstream_failed(self) -> bool: ...
    @property
    def failure(self) -> str | None: ...
    @property
    def status(self) -> int | None: ...


log = logging.getLogger("autellix.faults")

# Failures that happened before the engine sent any answer (connection refused or dropped,
# no first byte in time): the call may be sent again elsewhere.
_BEFORE_ANSWER = frozenset({"engine_unreachable", "engine_timeout", "engine_error"})


class IdleWatch:
    """Closes an engine response that has been silent for ``seconds``, or that is still going
    at ``deadline`` (loop time; the engine's ``timeout_s``, end to end). Each chunk costs only
    a clock read (``kick``); the one timer re-arms itself lazily."""

    __slots__ = ("_handle", "_loop", "_upstream", "deadline", "expired", "fired", "last", "seconds")

    def __init__(
        self, upstream: aiohttp.ClientResponse, seconds: float, deadline: float | None = None
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._upstream = upstream
        self.seconds = seconds
        self.deadline = math.inf if deadline is None else deadline
        self.last = self._loop.time()
        self.fired = False  # silent too long
        self.expired = False  # past the deadline
        self._handle = self._loop.call_at(min(self.last + seconds, self.deadline), self._check)

    def kick(self) -> None:
        self.last = self._loop.time()

    def _check(self) -> None:
        now = self._loop.time()
        due = min(self.last + self.seconds, self.deadline)
        if now < due:
            self._handle = self._loop.call_at(due, self._check)
            return
        if now >= self.deadline:
            self.expired = True
        else:
            self.fired = True
        self._upstream.close()

    def cancel(self) -> None:
        self._handle.cancel()


def retry_elsewhere(
    err: ProxyError,
    engine: EngineState,
    *,
    model: str | None,
    pool: EnginePool,
    metrics: Metrics,
    tries: int,
) -> bool:
    """Send the call to another engine? Once, for a failure before any answer, when another
    healthy engine serves the model. The failed engine is set aside until its health check
    passes, so the retry cannot land on it again."""
    if tries != 1 or err.code not in _BEFORE_ANSWER or err.code == "engine_unreachable":
        return False  # unreachable engines have their own retries (nothing was sent at all)
    others = [
        s
        for s in pool.engines.values()
        if s is not engine
        and s.healthy
        and (model is None or (s.models is not None and model in s.models))
    ]
    if not others:
        return False
    pool.mark_failed(engine, err.message)
    metrics.engine_healthy.labels(engine.name).set(0)
    metrics.retries.labels(engine.name).inc()
    log.warning(
        "call failed at engine %s before an answer (%s); sending it elsewhere",
        engine.name,
        err.message,
    )
    return True


def settle(engine: EngineState, outcome: Outcome) -> None:
    """Count a finished engine call toward the engine's passive health."""
    if outcome.upstream_failed:
        engine.failed(outcome.failure or "its answer broke off")
    elif outcome.status and outcome.status < 500:
        engine.succeeded()
