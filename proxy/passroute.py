"""Which engines a pass-through request (``passthrough_routes``: embeddings, responses, audio,
...) goes to, and in what order.

- A request for work (embeddings, moderations, audio, a new response) is stateless: the
  configured balancer chooses among the healthy engines serving its model, as it chooses for
  a short call (no program, no prefix), from their load (the calls the proxy has in flight
  there, and what they last reported waiting and of KV in use). The others follow, least
  loaded first, should the chosen one be unreachable.
- A request about an object an engine stores (``responses/{id}`` and below: a response kept by
  the engine that made it) is not the balancer's to place: it is sent to each such engine in
  turn until one answers other than 404 (404 only if none knows the object).
- ``X-Autellix-Engine: <name>`` sends the request to that engine alone: to reach every engine
  with a per-engine route an operator allowlisted (loading a LoRA adapter, say), one request
  per engine (``/ready`` lists them). With client keys, only keys with ``admin`` or
  ``engine_control`` may name an engine.
"""

from __future__ import annotations

import time

from aiohttp import web

from proxy.auth import principal_of
from proxy.errors import Forbidden, NotFound
from proxy.kvhints.load import EngineLoad
from proxy.kvhints.pool import EngineState
from proxy.state import ProxyState

ENGINE_HEADER = "X-Autellix-Engine"
# Routes (under /v1) that address an object stored on the engine that made it.
_STORED = ("responses",)


def stored_object(path: str) -> bool:
    """Does ``path`` (checked, from /v1/) name an object stored on one engine?"""
    segments = path.partition("?")[0].removeprefix("/v1/").split("/")
    return len(segments) >= 2 and segments[0] in _STORED


def engines_for(
    request: web.Request, state: ProxyState, model: str | None, path: str
) -> list[EngineState]:
    """The engines to try, in order (never empty; errors as ``EnginePool.serving``)."""
    named = request.headers.get(ENGINE_HEADER)
    if named is not None:
        principal = principal_of(request)
        if principal is not None and not (principal.admin or principal.engine_control):
            raise Forbidden(
                f"header {ENGINE_HEADER} needs a key with admin or engine_control",
                param=ENGINE_HEADER,
                code="engine_not_allowed",
            )
        engine = state.pool.engines.get(named)
        if engine is None:
            raise NotFound(f"no engine named {named[:100]!r}", code="engine_not_found")
        return [engine]
    candidates = state.pool.serving(model)
    if stored_object(path):
        return sorted(candidates, key=_busy)
    loads = [EngineLoad(s.inflight, s.load.waiting, s.load.kv_usage, s.name) for s in candidates]
    first = state.gate.router.pick(
        loads, program="", prompt_tokens=0, affinity=None, now=time.monotonic()
    )
    chosen = candidates[first]
    return [chosen, *sorted((s for s in candidates if s is not chosen), key=_busy)]


def _busy(engine: EngineState) -> tuple[int, int]:
    return engine.inflight, engine.load.waiting or 0
