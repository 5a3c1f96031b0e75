"""vLLM's prefix-cache block hashes, computed from token ids as the engine computes them.

vLLM keys each full block of ``block_size`` tokens by ``hash((parent, tokens, extra_keys))``,
the parent being the previous block's hash and, for the first block, ``NONE_HASH``: the hash
of a seed string. With the engine's default algorithm (``--prefix-caching-hash-algo sha256``:
SHA-256 of the pickled tuple) or ``sha256_cbor`` (SHA-256 of its canonical CBOR), and the seed
``"vllm-none-hash"`` that vLLM uses for these unless the engine's ``PYTHONHASHSEED`` is set,
the hashes are reproducible outside the engine: the ones computed here are the ones its KV
events name. The ``xxhash`` algorithms take a random per-process seed unless
``PYTHONHASHSEED`` is set, and need the xxhash module: not supported. Blocks with extra keys
(LoRA adapters, multimodal inputs, ``cache_salt``) hash differently; callers skip those.

KV events carry a hash as the digest's bytes, or (``VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=1``,
the default) as its low 64 bits; ``short`` gives the latter.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Callable, Sequence

ALGORITHMS = ("sha256", "sha256_cbor")
DEFAULT_SEED = "vllm-none-hash"
_LOW64 = (1 << 64) - 1


def short(value: int) -> int:
    """A hash as KV events carry it by default: the low 64 bits of the digest."""
    return value & _LOW64


def _pickled(obj: object) -> bytes:
    # vLLM pickles with the highest protocol; protocol 5's output for bytes, str, ints,
    # tuples and None is the same on every CPython that vLLM supports.
    return hashlib.sha256(pickle.dumps(obj, protocol=5)).digest()


def _cbor_head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for extra, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([major << 5 | extra]) + n.to_bytes(width, "big")
    raise ValueError(f"{n} is too large for CBOR")


def cbor(obj: object) -> bytes:
    """Canonical CBOR (RFC 8949, section 4.2.1: shortest heads) of the few types block hashing
    uses: None, non-negative and negative ints, bytes, str, and tuples or lists of these."""
    if obj is None:
        return b"\xf6"
    if isinstance(obj, bool):
        return b"\xf5" if obj else b"\xf4"
    if isinstance(obj, int):
        return _cbor_head(0, obj) if obj >= 0 else _cbor_head(1, -1 - obj)
    if isinstance(obj, bytes):
        return _cbor_head(2, len(obj)) + obj
    if isinstance(obj, str):
        data = obj.encode()
        return _cbor_head(3, len(data)) + data
    if isinstance(obj, tuple | list):
        return _cbor_head(4, len(obj)) + b"".join(cbor(item) for item in obj)
    raise TypeError(f"no CBOR encoding for {type(obj).__name__}")


def _cbor_sha256(obj: object) -> bytes:
    return hashlib.sha256(cbor(obj)).digest()


_FUNCTIONS: dict[str, Callable[[object], bytes]] = {
    "sha256": _pickled,
    "sha256_cbor": _cbor_sha256,
}


def block_hashes(
    tokens: Sequence[int], block_size: int, *, algo: str = "sha256", seed: str | None = None
) -> tuple[int, ...]:
    """The engine's hashes of the full blocks of ``tokens`` (a partial last block is not
    cached), as integers of the whole digest. ``seed``: the engine's ``PYTHONHASHSEED`` if it
    sets one."""
    if block_size < 1:
        raise ValueError("block_size must be at least 1")
    fn = _FUNCTIONS.get(algo)
    if fn is None:
        raise ValueError(f"hash algorithm {algo!r} is not reproducible; known: {ALGORITHMS}")
    parent = fn(DEFAULT_SEED if seed is None else seed)
    out = []
    for start in range(0, len(tokens) - block_size + 1, block_size):
        parent = fn((parent, tuple(tokens[start : start + block_size]), None))
        out.append(int.from_bytes(parent, "big"))
    return tuple(out)
