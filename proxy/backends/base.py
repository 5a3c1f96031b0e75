"""The Backend contract: what the proxy needs from one kind of engine.

A backend knows an engine kind's dialect (which body fields carry a priority and a request id,
how to abort, where health and load are read); the HTTP mechanics of sending a call and
relaying its answer are shared by all kinds (``proxy.relay``). Backends are found by kind in
``proxy.backends.registry``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import aiohttp

from proxy.config import EngineConfig


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an engine kind lets the proxy control."""

    native_priority: bool = False  # takes a per-request priority at submission
    live_priority: bool = False  # takes priority changes after submission
    preemption: bool = False  # preempts running requests for better-priority waiting ones
    abort: bool = False  # has an endpoint to abort a request by id
    resume: bool = False  # continues a partial answer (continue_final_message)


@dataclass(frozen=True, slots=True)
class CallHints:
    """What the proxy knows of a call that an engine's scheduler can use."""

    level: int  # the policy's queue level (0: top)
    program_id: str
    call_id: str
    thread: str = ""
    service: float = 0.0  # the program's attained service when the call arrived


@dataclass(frozen=True, slots=True)
class EngineLoad:
    """Load read from an engine's metrics; None where the engine does not say."""

    running: int | None = None
    waiting: int | None = None
    kv_usage: float | None = None  # 0..1


@runtime_checkable
class Backend(Protocol):
    """One engine behind the proxy, in its kind's dialect.

    All methods that talk to the engine take the app's shared ``aiohttp.ClientSession``; none
    keeps connections of its own. Methods never raise for an unreachable engine where the
    contract says they return a value: health checks and aborts are best-effort.
    """

    config: EngineConfig
    capabilities: Capabilities

    @property
    def name(self) -> str: ...

    @property
    def base_url(self) -> str: ...

    def auth_headers(self, client_authorization: str | None) -> dict[str, str]:
        """Headers that authenticate the proxy (or, if configured, the client) to the engine."""
        ...

    def prepare_body(
        self, body: dict[str, Any], *, request_id: str, hints: CallHints | None = None
    ) -> dict[str, Any]:
        """Add the kind's own fields (request id, priority, scheduler hints) to a generation
        body. Returns a new dict, or ``body`` itself if there is nothing to add (the proxy
        then sends the client's bytes as they came); the client's body is never changed."""
        ...

    async def health(self, session: aiohttp.ClientSession) -> bool:
        """True if the engine answers its health check now."""
        ...

    async def list_models(self, session: aiohttp.ClientSession) -> list[str]:
        """The model ids the engine serves; raises ``aiohttp.ClientError`` if unreachable."""
        ...

    async def abort(self, session: aiohttp.ClientSession, request_id: str) -> bool:
        """Ask the engine to drop a request; True if the engine took the request."""
        ...

    async def load(self, session: aiohttp.ClientSession) -> EngineLoad:
        """The engine's current load; empty where it cannot be read."""
        ...
