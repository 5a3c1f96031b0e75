"""Decoding vLLM's KV event wire, in both struct layouts vLLM versions use."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from proxy.kvhints.events import (
    CLEARED,
    REMOVED,
    STORED,
    EventError,
    KVEvent,
    KVEventBatch,
    decode_batch,
    decode_message,
    encode_message,
)


def test_map_layout_with_digest_hashes() -> None:
    # As msgspec encodes vLLM's tagged structs by default: maps, the tag under "type".
    payload = msgpack.packb(
        {
            "ts": 12.5,
            "events": [
                {
                    "type": "BlockStored",
                    "block_hashes": [b"\x00\x01", 7],
                    "parent_block_hash": None,
                    "token_ids": [1, 2, 3],
                    "block_size": 16,
                    "lora_id": None,
                    "medium": "GPU",
                    "lora_name": None,
                    "group_idx": 0,
                },
                {"type": "BlockRemoved", "block_hashes": [7], "medium": "GPU"},
                {"type": "AllBlocksCleared"},
                {"type": "SomethingNewer", "x": 1},
            ],
        },
        use_bin_type=True,
    )
    batch = decode_batch(payload)
    assert batch == KVEventBatch(
        12.5,
        (
            KVEvent(STORED, (1, 7), None, "GPU", 16),
            KVEvent(REMOVED, (7,), None, "GPU"),
            KVEvent(CLEARED),
        ),
    )


def test_array_layout() -> None:
    # Older vLLMs: array_like structs, the tag first, fields in declaration order.
    payload = msgpack.packb(
        [
            1.0,
            [["BlockStored", [5, 6], 4, [9] * 32, 16, None, "GPU"], ["BlockRemoved", [5], "CPU"]],
            0,
        ],
        use_bin_type=True,
    )
    batch = decode_batch(payload)
    assert batch.rank == 0
    assert batch.events == (
        KVEvent(STORED, (5, 6), 4, "GPU", 16),
        KVEvent(REMOVED, (5,), None, "CPU"),
    )


def test_the_message_frames_round_trip() -> None:
    batch = KVEventBatch(
        3.0, (KVEvent(STORED, (2**64 - 1, 3), 1, "GPU", 16), KVEvent(CLEARED)), rank=1
    )
    frames = encode_message(41, batch, topic="kv")
    assert frames[0] == b"kv"
    assert frames[1] == (41).to_bytes(8, "big")
    assert decode_message(frames) == (41, batch)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1", "not a msgpack payload"),
        (msgpack.packb({"ts": "x", "events": []}), "numeric ts"),
        (msgpack.packb([1.0, [{"block_hashes": []}]]), "no type tag"),
        (msgpack.packb([1.0, [{"type": "BlockStored", "block_hashes": 3}]]), "must be a list"),
        (
            msgpack.packb([1.0, [{"type": "BlockRemoved", "block_hashes": [1.5]}]]),
            "integer or bytes",
        ),
    ],
)
def test_garbage_is_an_event_error(payload: bytes, message: str) -> None:
    with pytest.raises(EventError, match=message):
        decode_batch(payload)


def test_a_message_needs_three_frames() -> None:
    with pytest.raises(EventError, match="3 frames"):
        decode_message([b"", b"x"])


@pytest.mark.parametrize("array_like", [False, True])
def test_what_msgspec_structs_shaped_as_vllms_encode(array_like: bool) -> None:
    # Structs declared as vLLM declares its events (tagged, omit_defaults), in both layouts.
    msgspec = pytest.importorskip("msgspec")

    class Batch(msgspec.Struct, array_like=array_like, omit_defaults=True):  # type: ignore[call-arg]
        ts: float
        events: list[Any]
        data_parallel_rank: int | None = None

    class Event(msgspec.Struct, array_like=array_like, omit_defaults=True, tag=True):  # type: ignore[call-arg]
        pass

    class BlockStored(Event):
        block_hashes: list[bytes | int]
        parent_block_hash: bytes | int | None
        token_ids: list[int]
        block_size: int
        lora_id: int | None
        medium: str | None
        lora_name: str | None = None
        group_idx: int | None = None

    class BlockRemoved(Event):
        block_hashes: list[bytes | int]
        medium: str | None

    class AllBlocksCleared(Event):
        pass

    batch = Batch(
        ts=5.0,
        events=[
            BlockStored([b"\x01" * 32, 2], None, list(range(32)), 16, None, "GPU"),
            BlockRemoved([2], "GPU"),
            AllBlocksCleared(),
        ],
    )
    payload = msgspec.msgpack.encode(batch)
    decoded = decode_message([b"", (7).to_bytes(8, "big"), payload])
    assert decoded == (
        7,
        KVEventBatch(
            5.0,
            (
                KVEvent(STORED, (int.from_bytes(b"\x01" * 32, "big"), 2), None, "GPU", 16),
                KVEvent(REMOVED, (2,), None, "GPU"),
                KVEvent(CLEARED),
            ),
        ),
    )
