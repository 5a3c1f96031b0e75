"""vLLM's KV cache events on the wire, decoded into plain values (and encoded, for the
simulated engine, which publishes the same wire).

vLLM (``--kv-events-config``, ``vllm/distributed/kv_events.py``) publishes on a ZMQ PUB
socket, one multipart message per batch: ``(topic, sequence number as 8 bytes big-endian,
payload)``. The payload is a msgpack ``KVEventBatch``: ``ts``, ``events`` and an optional
``data_parallel_rank``. Each event is a tagged struct: ``BlockStored`` (``block_hashes``,
``parent_block_hash``, ``token_ids``, ``block_size``, ``lora_id``, ``medium`` ...),
``BlockRemoved`` (``block_hashes``, ``medium`` ...) or ``AllBlocksCleared``. Versions differ
in layout: structs as maps (the tag under ``type``) or as arrays (the tag first, fields in
declaration order); both are read. A block hash is an integer or bytes (a digest); bytes are
read as a big-endian integer, so each hash is one int either way.

Anything malformed raises ``EventError`` with what was wrong; the subscriber logs it and
goes on with the next batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

STORED = "BlockStored"
REMOVED = "BlockRemoved"
CLEARED = "AllBlocksCleared"


class EventError(ValueError):
    """A KV event batch that cannot be read."""


@dataclass(frozen=True, slots=True)
class KVEvent:
    kind: str  # STORED, REMOVED or CLEARED
    hashes: tuple[int, ...] = ()
    parent: int | None = None  # BlockStored: the block before the first one
    medium: str | None = None  # "GPU", "CPU"...: where the blocks live
    block_size: int | None = None  # BlockStored: tokens per block


@dataclass(frozen=True, slots=True)
class KVEventBatch:
    ts: float
    events: tuple[KVEvent, ...]
    rank: int | None = None


def _codec() -> tuple[Callable[[bytes], Any], Callable[[Any], bytes]]:
    """msgpack's decode and encode: from msgpack, else from msgspec (which vLLM itself uses,
    so a vLLM environment has it)."""
    try:
        import msgpack  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        pass
    else:
        return (
            lambda b: msgpack.unpackb(b, raw=False, strict_map_key=False),
            lambda o: msgpack.packb(o, use_bin_type=True),
        )
    try:
        import msgspec  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:  # pragma: no cover - depends on the environment
        from proxy.errors import ConfigError

        raise ConfigError(
            "KV events need msgpack (or msgspec) and pyzmq: pip install 'autellix-proxy[kvevents]'"
        ) from exc
    return msgspec.msgpack.decode, msgspec.msgpack.encode


def _hash(value: object) -> int:
    if isinstance(value, bool):
        raise EventError(f"a block hash must be an integer or bytes, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | bytearray):
        return int.from_bytes(value, "big")
    raise EventError(f"a block hash must be an integer or bytes, got {type(value).__name__}")


def _hashes(value: object) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise EventError(f"block_hashes must be a list, got {type(value).__name__}")
    return tuple(_hash(h) for h in value)


def _fields(raw: object) -> tuple[str, dict[str, Any]]:
    """An event's tag and its fields by name, from either layout."""
    if isinstance(raw, dict):
        tag = raw.get("type")
        fields = raw
    elif isinstance(raw, list | tuple) and raw:
        tag = raw[0]
        names = {
            STORED: (
                "block_hashes",
                "parent_block_hash",
                "token_ids",
                "block_size",
                "lora_id",
                "medium",
            ),
            REMOVED: ("block_hashes", "medium"),
        }.get(tag if isinstance(tag, str) else "", ())
        fields = dict(zip(names, raw[1:], strict=False))
    else:
        raise EventError(f"an event must be a map or an array, got {raw!r:.80}")
    if isinstance(tag, bytes):
        tag = tag.decode(errors="replace")
    if not isinstance(tag, str):
        raise EventError(f"an event has no type tag: {raw!r:.80}")
    return tag, fields


def decode_event(raw: object) -> KVEvent | None:
    """One event; None for kinds this proxy does not use (newer vLLMs may add some)."""
    tag, fields = _fields(raw)
    medium = fields.get("medium")
    medium = medium if isinstance(medium, str) else None
    if tag == STORED:
        parent = fields.get("parent_block_hash")
        size = fields.get("block_size")
        return KVEvent(
            STORED,
            _hashes(fields.get("block_hashes")),
            None if parent is None else _hash(parent),
            medium,
            size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None,
        )
    if tag == REMOVED:
        return KVEvent(REMOVED, _hashes(fields.get("block_hashes")), None, medium)
    if tag == CLEARED:
        return KVEvent(CLEARED)
    return None


def decode_batch(payload: bytes) -> KVEventBatch:
    try:
        raw = _codec()[0](payload)
    except Exception as exc:  # msgpack raises several kinds on garbage
        raise EventError(f"not a msgpack payload: {exc}") from exc
    if isinstance(raw, dict):
        ts, events, rank = raw.get("ts"), raw.get("events"), raw.get("data_parallel_rank")
    elif isinstance(raw, list | tuple) and len(raw) >= 2:
        ts, events = raw[0], raw[1]
        rank = raw[2] if len(raw) > 2 else None
    else:
        raise EventError(f"a batch must be a map or an array of ts and events, got {raw!r:.80}")
    if not isinstance(ts, int | float) or not isinstance(events, list | tuple):
        raise EventError("a batch needs a numeric ts and a list of events")
    decoded = tuple(e for e in (decode_event(item) for item in events) if e is not None)
    return KVEventBatch(float(ts), decoded, rank if isinstance(rank, int) else None)


def decode_message(frames: Sequence[bytes]) -> tuple[int, KVEventBatch]:
    """A ZMQ message ``(topic, seq, payload)``: its sequence number and batch."""
    if len(frames) != 3:
        raise EventError(
            f"a KV event message has 3 frames (topic, seq, payload), got {len(frames)}"
        )
    _topic, seq, payload = frames
    if len(seq) != 8:
        raise EventError("the sequence frame must be 8 bytes")
    return int.from_bytes(seq, "big", signed=True), decode_batch(payload)


def encode_message(
    seq: int, batch: KVEventBatch, *, topic: str = "", block_size: int = 16
) -> list[bytes]:
    """The wire form of ``batch``, as vLLM's map layout: for the simulated engine's publisher
    and for tests."""
    events: list[dict[str, Any]] = []
    for e in batch.events:
        if e.kind == STORED:
            events.append(
                {
                    "type": STORED,
                    "block_hashes": list(e.hashes),
                    "parent_block_hash": e.parent,
                    "token_ids": [],
                    "block_size": e.block_size or block_size,
                    "lora_id": None,
                    "medium": e.medium or "GPU",
                    "lora_name": None,
                }
            )
        elif e.kind == REMOVED:
            events.append(
                {"type": REMOVED, "block_hashes": list(e.hashes), "medium": e.medium or "GPU"}
            )
        else:
            events.append({"type": CLEARED})
    body: dict[str, Any] = {"ts": batch.ts, "events": events}
    if batch.rank is not None:
        body["data_parallel_rank"] = batch.rank
    payload = _codec()[1](body)
    return [topic.encode(), seq.to_bytes(8, "big", signed=True), payload]
