"""The I/O edge of the prefix index: one task per engine that publishes KV events, reading
its ZMQ PUB socket and applying each batch to the index."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

from proxy.errors import ConfigError
from proxy.kvhints.events import CLEARED, REMOVED, STORED, EventError, KVEventBatch, decode_message
from proxy.kvhints.index import PrefixIndex

log = logging.getLogger("autellix.kvevents")


def apply(
    index: PrefixIndex, engine: str, batch: KVEventBatch, counts: Counter[tuple[str, str]]
) -> None:
    """The index learns ``engine``'s batch, event by event, in order."""
    for event in batch.events:
        counts[(engine, event.kind)] += 1
        if event.kind == STORED:
            index.stored(engine, event.hashes)
            if event.block_size is not None:
                index.block_sizes[engine] = event.block_size
        elif event.kind == REMOVED:
            index.removed(engine, event.hashes)
        elif event.kind == CLEARED:
            index.cleared(engine)


def _zmq() -> Any:
    try:
        import zmq.asyncio  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "kv_events_url needs pyzmq and msgpack: pip install 'autellix-proxy[kvevents]'"
        ) from exc
    return zmq


async def subscribe(
    index: PrefixIndex,
    engine: str,
    url: str,
    counts: Counter[tuple[str, str]],
    *,
    ready: asyncio.Event | None = None,
) -> None:
    """Read ``engine``'s KV events from ``url`` until cancelled. A gap in the sequence
    numbers means lost batches (the index may hold blocks the engine dropped): logged, and
    the next ``AllBlocksCleared`` or eviction mends it."""
    zmq = _zmq()
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.SUB)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    socket.connect(url)
    log.info("reading KV events of engine %s from %s", engine, url)
    last: int | None = None
    if ready is not None:
        ready.set()
    try:
        while True:
            frames = await socket.recv_multipart()
            try:
                seq, batch = decode_message(frames)
            except EventError as exc:
                counts[(engine, "undecodable")] += 1
                log.warning(
                    "engine %s sent a KV event message that cannot be read: %s", engine, exc
                )
                continue
            if last is not None and seq > last + 1:
                log.warning(
                    "engine %s: %d KV event batches lost (sequence %d after %d)",
                    engine, seq - last - 1, seq, last,
                )  # fmt: skip
            last = seq
            apply(index, engine, batch, counts)
    finally:
        socket.close(linger=0)
        context.term()
