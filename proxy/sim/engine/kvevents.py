"""The simulated engine's KV cache events, on vLLM's wire (``proxy.kvhints.events``), so that
the proxy's prefix index is fed by a simulated engine exactly as by a vLLM.

The engine model has no prefix cache of its own; this is a model of one, for the events: each
admitted prompt's full blocks, hashed as the proxy hashes them (``proxy.kvhints.blocks``),
are stored, least recently used first out when the cache's blocks run out. Each admission
publishes one batch: the blocks it stored and the blocks it pushed out.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any

from proxy.kvhints.blocks import text_blocks
from proxy.kvhints.events import REMOVED, STORED, KVEvent, KVEventBatch, encode_message


def _zmq() -> Any:
    try:
        import zmq  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError("kv_events_endpoint needs pyzmq and msgpack") from exc
    return zmq


class KVEventPublisher:
    """Binds a ZMQ PUB socket at ``endpoint`` (``tcp://127.0.0.1:*`` picks a free port;
    ``address`` says which). Sends never block: a subscriber that falls behind loses batches,
    as with vLLM, and sees the gap in the sequence numbers."""

    def __init__(self, endpoint: str, *, capacity_blocks: int, block_tokens: int) -> None:
        zmq = self._zmq = _zmq()
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PUB)
        self._socket.setsockopt(zmq.LINGER, 0)
        self._socket.bind(endpoint)
        self.address: str = self._socket.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.capacity = capacity_blocks
        self.block_tokens = block_tokens
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self._seq = 0

    def admitted(self, prompt: str, now: float) -> KVEventBatch | None:
        """A request with ``prompt`` was admitted: publish what its blocks change."""
        hashes = text_blocks(prompt, self.block_tokens)
        stored: list[int] = []
        for h in hashes:
            if h in self._blocks:
                self._blocks.move_to_end(h)
            else:
                self._blocks[h] = None
                stored.append(h)
        removed: list[int] = []
        while len(self._blocks) > self.capacity:
            removed.append(self._blocks.popitem(last=False)[0])
        if not stored and not removed:
            return None
        events = []
        if stored:
            first = hashes.index(stored[0])
            events.append(
                KVEvent(STORED, tuple(stored), hashes[first - 1] if first else None, "GPU")
            )
        if removed:
            events.append(KVEvent(REMOVED, tuple(removed), None, "GPU"))
        batch = KVEventBatch(now, tuple(events))
        frames = encode_message(self._seq, batch, block_size=self.block_tokens)
        self._seq += 1
        # No room at the high-water mark: lost, as the sequence gap will tell.
        with contextlib.suppress(self._zmq.Again):
            self._socket.send_multipart(frames, flags=self._zmq.NOBLOCK)
        return batch

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()
