"""The simulated engine's KV events: what it stores and evicts, on vLLM's wire."""

from __future__ import annotations

import time

import zmq

from proxy.kvhints.blocks import text_blocks
from proxy.kvhints.events import REMOVED, STORED, KVEvent, decode_message
from proxy.sim.engine.kvevents import KVEventPublisher


def test_new_blocks_are_stored_and_the_oldest_evicted() -> None:
    publisher = KVEventPublisher("tcp://127.0.0.1:*", capacity_blocks=4, block_tokens=16)
    try:
        one = "a" * 64 * 3
        blocks = text_blocks(one, 16)
        batch = publisher.admitted(one, 1.0)
        assert batch is not None
        assert batch.events == (KVEvent(STORED, blocks, None, "GPU"),)
        assert publisher.admitted(one, 2.0) is None  # all cached: nothing changes
        longer = one + "b" * 64 * 2
        more = text_blocks(longer, 16)
        batch = publisher.admitted(longer, 3.0)
        assert batch is not None
        # Two new blocks, chained to the cached ones; one old block out (capacity 4).
        assert batch.events == (
            KVEvent(STORED, more[3:], more[2], "GPU"),
            KVEvent(REMOVED, (blocks[0],), None, "GPU"),
        )
    finally:
        publisher.close()


def test_batches_go_out_on_the_wire() -> None:
    publisher = KVEventPublisher("tcp://127.0.0.1:*", capacity_blocks=100, block_tokens=16)
    context = zmq.Context()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.setsockopt(zmq.LINGER, 0)
    sub.connect(publisher.address)
    try:
        received = None
        for i in range(200):  # until the subscription has reached the publisher
            publisher.admitted(f"{i:04d}" + "x" * 60, float(i))
            if sub.poll(10):
                received = decode_message(sub.recv_multipart())
                break
            time.sleep(0.005)
        assert received is not None
        seq, batch = received
        assert batch.events[0].kind == STORED
        assert batch.ts == float(seq)  # one batch per admission, numbered from 0
    finally:
        sub.close()
        context.term()
        publisher.close()
