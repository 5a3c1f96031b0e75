"""The engines behind the proxy: their health, models and load, and the choice among them.

The pool's state is refreshed by one poller task that the app owns; choosing an engine is a
pure function of that state, so it costs nothing on the request path.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp

from proxy.backends.base import Backend, EngineLoad
from proxy.errors import ModelNotFound, ServiceUnavailable
from proxy.kvhints.breaker import Breaker

log = logging.getLogger("autellix.pool")


@dataclass(slots=True)
class EngineState:
    backend: Backend
    healthy: bool = True  # optimistic until the first check says otherwise
    models: frozenset[str] | None = None  # None: not yet known
    inflight: int = 0
    load: EngineLoad = field(default_factory=EngineLoad)
    last_error: str | None = None
    failures: int = 0  # calls failed in a row (passive health)
    breaker: Breaker = field(default_factory=Breaker)
    clock: Callable[[], float] = time.monotonic

    @property
    def name(self) -> str:
        return self.backend.name

    def failed(self, reason: str) -> None:
        """A call failed at this engine (unreachable, timed out, broken or garbled answer).
        After ``eject_after`` in a row (or one, on trial after a trip) it gets no calls until
        the breaker's wait is over and a health check passes: an engine can hang or babble
        while its /health stays green."""
        self.failures += 1
        limit = 1 if self.breaker.half_open else self.backend.config.eject_after
        if self.healthy and self.failures >= limit:
            self.healthy = False
            wait = self.breaker.trip(self.clock())
            self.last_error = (
                f"ejected after {self.failures} failed calls in a row: {reason} "
                f"(circuit open, next try in {wait:g} s at the earliest)"
            )
            log.warning("engine %s ejected: %s", self.name, self.last_error)

    def succeeded(self) -> None:
        self.failures = 0
        if self.breaker.close():
            log.warning("engine %s: circuit closed, its trial call went well", self.name)


class EnginePool:
    """``breaker``: the circuit breaker's settings, copied for each engine; ``clock``: its
    time."""

    def __init__(
        self,
        backends: Iterable[Backend] = (),
        *,
        breaker: Breaker | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engines: dict[str, EngineState] = {}
        self._breaker = breaker or Breaker()
        self._clock = clock
        for backend in backends:
            self.add(backend)

    def add(self, backend: Backend) -> EngineState:
        state = EngineState(
            backend,
            models=frozenset(backend.config.models) or None,
            breaker=Breaker(self._breaker.backoff_s, self._breaker.max_backoff_s),
            clock=self._clock,
        )
        self.engines[backend.name] = state
        return state

    def models(self) -> dict[str, list[str]]:
        """Model id -> names of the healthy engines that serve it."""
        out: dict[str, list[str]] = {}
        for state in self.engines.values():
            if state.healthy and state.models:
                for model in sorted(state.models):
                    out.setdefault(model, []).append(state.name)
        return out

    def any_healthy(self) -> bool:
        return any(s.healthy for s in self.engines.values())

    def healthy_for(self, model: str | None) -> bool:
        """Is some healthy engine serving ``model`` (or any, for None)?"""
        return any(
            s.healthy and (model is None or (s.models is not None and model in s.models))
            for s in self.engines.values()
        )

    def check(self, model: str | None) -> None:
        """Raise what ``serving`` raises, without building its lists when a healthy engine
        serves ``model`` (once per call)."""
        for s in self.engines.values():
            if s.healthy and (model is None or (s.models is not None and model in s.models)):
                return
        self.serving(model)

    def serving(self, model: str | None) -> list[EngineState]:
        """The healthy engines that serve ``model`` (None: any engine); never empty.

        Unknown model -> NotFound, unless some engine's models are not known yet, in which
        case the model may well exist and the answer is ServiceUnavailable; no healthy engine
        for it -> ServiceUnavailable.
        """
        if not self.engines:
            raise ServiceUnavailable("no engines are configured")
        if model is None:
            candidates = list(self.engines.values())
        else:
            candidates = [s for s in self.engines.values() if s.models and model in s.models]
            if not candidates:
                unknown = [s.name for s in self.engines.values() if s.models is None]
                if unknown:
                    raise ServiceUnavailable(
                        f"model {model!r} is not listed by any reachable engine; "
                        f"engine(s) {', '.join(unknown)} could not be asked (unreachable)",
                        code="engine_unavailable",
                    )
                raise ModelNotFound(
                    f"model {model!r} does not exist; available: {', '.join(sorted(self.models())) or 'none'}"
                )
        healthy = [s for s in candidates if s.healthy]
        if not healthy:
            details = "; ".join(f"{s.name} ({s.last_error or 'unhealthy'})" for s in candidates)
            raise ServiceUnavailable(
                f"no healthy engine serves {model or 'this request'}: {details}",
                code="engine_unavailable",
            )
        return healthy

    async def refresh_one(self, session: aiohttp.ClientSession, state: EngineState) -> None:
        backend = state.backend
        healthy = await backend.health(session)
        if healthy and not backend.config.models:
            try:
                state.models = frozenset(await backend.list_models(session))
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                healthy = False
                state.last_error = f"listing models failed: {exc}"
        if healthy:
            state.load = await backend.load(session)
        if healthy and not state.healthy and not state.breaker.may_retry(self._clock()):
            healthy = False  # the breaker is open: the check passes, the wait is not over
        elif healthy:
            state.last_error = None
            if not state.healthy:
                state.failures = 0  # re-admitted: its next failures count afresh
                state.breaker.readmit()
        elif state.last_error is None or state.healthy:
            state.last_error = f"health check of {backend.base_url} failed"
        if healthy != state.healthy:
            trial = " (half-open: on trial)" if healthy and state.breaker.half_open else ""
            log.warning(
                "engine %s is now %s%s", state.name, "healthy" if healthy else "unhealthy", trial
            )
        log.debug(
            "engine %s: %s, models %s, load running=%s waiting=%s kv=%s",
            state.name, "healthy" if healthy else f"unhealthy ({state.last_error})",
            sorted(state.models or ()), state.load.running, state.load.waiting, state.load.kv_usage,
        )  # fmt: skip
        state.healthy = healthy

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(self.refresh_one(session, s) for s in list(self.engines.values())))

    def mark_failed(self, state: EngineState, reason: str) -> None:
        """A call could not reach the engine: stop sending it calls until a check passes."""
        if state.healthy:
            wait = state.breaker.trip(self._clock())
            log.warning(
                "engine %s marked unhealthy for %g s at least, then until its health check "
                "passes: %s",
                state.name, wait, reason,
            )  # fmt: skip
        state.healthy = False
        state.last_error = reason
