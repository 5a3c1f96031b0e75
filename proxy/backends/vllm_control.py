"""The proxy's end of the control channel to vLLM engines running the Autellix scheduler.

The proxy tells an engine what it learns after a call was submitted: a program's newer attained
service (its calls on this engine re-rank from it) or an explicit level for one call (an
anti-starvation promotion, say). The engine side (``proxy.backends.vllm_plugin.control``) binds
a PULL socket at ``AUTELLIX_PLUGIN_CONTROL_ADDR``; one ``ControlChannel`` per engine connects to it.

Updates are advice: if the engine is not reading (down, or its queue is full) a message is
dropped and counted rather than awaited, so the proxy's request path never stalls on it. The
next update, or the next call's own ``vllm_xargs``, carries the newer figure anyway.
pyzmq is imported lazily: the proxy runs without it unless a channel is configured.
"""

from __future__ import annotations

import math
from typing import Any

import orjson

from proxy.errors import ConfigError

SEND_HWM = 10_000  # messages queued per engine before new ones are dropped


def _zmq_asyncio() -> Any:
    try:
        import zmq.asyncio  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:
        raise ConfigError(
            "the vLLM control channel needs pyzmq: pip install 'autellix-proxy[vllm]' "
            "(or just pyzmq)"
        ) from exc
    return zmq


class ControlChannel:
    """A PUSH socket connected to one engine's control address (``tcp://host:port``).

    Build and use it inside the running event loop (it belongs to the app's lifecycle, like any
    poller); ``close()`` when the app stops. Each ``send_*`` returns whether the message was
    queued for the engine; ``dropped`` counts those that were not."""

    def __init__(self, address: str, *, hwm: int = SEND_HWM) -> None:
        zmq = self._zmq = _zmq_asyncio()
        self.address = address
        self.sent = 0
        self.dropped = 0
        self._context = zmq.asyncio.Context()
        self._socket = self._context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.setsockopt(zmq.SNDHWM, hwm)
        try:
            self._socket.connect(address)
        except zmq.ZMQError as exc:
            self.close()
            raise ConfigError(f"bad vLLM control address {address!r}: {exc}") from exc

    async def _send(self, message: dict[str, object]) -> bool:
        try:
            await self._socket.send(orjson.dumps(message), flags=self._zmq.NOBLOCK)
        except self._zmq.Again:
            self.dropped += 1
            return False
        self.sent += 1
        return True

    async def send_program_service(self, program_id: str, service: float) -> bool:
        """The program's attained service now (the scalar its policy ranks by: PLAS service,
        ATLAS critical path), in the proxy's service unit."""
        if not program_id:
            raise ValueError("program_id must be a non-empty string")
        if not (math.isfinite(service) and service >= 0):
            raise ValueError("service must be finite and >= 0")
        return await self._send({"program": program_id, "service": float(service)})

    async def send_call_level(self, call_id: str, level: int) -> bool:
        """Put one call (the proxy's call id, ``autellix_call``) in ``level`` from now on."""
        if not call_id:
            raise ValueError("call_id must be a non-empty string")
        if isinstance(level, bool) or level < 0:
            raise ValueError("level must be an integer >= 0")
        return await self._send({"call": call_id, "level": int(level)})

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()
