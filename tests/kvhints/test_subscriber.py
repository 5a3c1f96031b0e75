"""The subscriber over a real ZMQ PUB socket on loopback: batches reach the index."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

import zmq
import zmq.asyncio

from proxy.kvhints.events import CLEARED, REMOVED, STORED, KVEvent, KVEventBatch, encode_message
from proxy.kvhints.index import PrefixIndex
from proxy.kvhints.subscriber import subscribe


async def test_events_from_a_publisher_feed_the_index() -> None:
    context = zmq.asyncio.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    index, counts = PrefixIndex(), Counter[tuple[str, str]]()
    task = asyncio.create_task(subscribe(index, "e", f"tcp://127.0.0.1:{port}", counts))
    try:
        # A SUB socket misses what is published before it is connected: publish until the
        # first batch has arrived, then the rest in order.
        first = encode_message(0, KVEventBatch(0.0, (KVEvent(STORED, (1, 2, 3)),)))
        for _ in range(200):
            await pub.send_multipart(first)
            await asyncio.sleep(0.01)
            if index.size("e"):
                break
        await pub.send_multipart(encode_message(1, KVEventBatch(1.0, (KVEvent(REMOVED, (3,)),))))
        await pub.send_multipart([b"", b"short", b"x"])  # garbage: skipped
        await pub.send_multipart(encode_message(2, KVEventBatch(2.0, (KVEvent(STORED, (9,)),))))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if index.size("e") == 3:
                break
        assert index.match([1, 2, 3], ["e"]) == {"e": 2}
        assert index.match([9], ["e"]) == {"e": 1}
        assert counts[("e", "undecodable")] == 1
        await pub.send_multipart(encode_message(3, KVEventBatch(3.0, (KVEvent(CLEARED),))))
        for _ in range(200):
            await asyncio.sleep(0.01)
            if not index.size("e"):
                break
        assert len(index) == 0
        assert counts[("e", STORED)] >= 2
        assert counts[("e", CLEARED)] == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        pub.close()
        context.term()
