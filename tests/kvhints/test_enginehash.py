"""vLLM's block hashes, computed the engine's way: the CBOR encoding, the chain, the seed.

(Equality with a real vLLM's own hashes is asserted in tests/vllm/test_kv_events.py.)"""

from __future__ import annotations

import hashlib
import pickle

import pytest

from proxy.kvhints.enginehash import DEFAULT_SEED, block_hashes, cbor, short


def test_cbor_is_canonical_for_the_types_block_hashing_uses() -> None:
    assert cbor(None) == b"\xf6"
    assert cbor(0) == b"\x00"
    assert cbor(23) == b"\x17"
    assert cbor(24) == b"\x18\x18"
    assert cbor(256) == b"\x19\x01\x00"
    assert cbor(65536) == b"\x1a\x00\x01\x00\x00"
    assert cbor(2**32) == b"\x1b\x00\x00\x00\x01\x00\x00\x00\x00"
    assert cbor(-1) == b"\x20"
    assert cbor(b"ab") == b"\x42ab"
    assert cbor("é") == b"\x62\xc3\xa9"
    assert cbor((1, (2, 3), None)) == b"\x83\x01\x82\x02\x03\xf6"
    with pytest.raises(TypeError):
        cbor(1.5)


def test_the_chain_hashes_full_blocks_each_over_its_parent() -> None:
    tokens = list(range(40))
    chain = block_hashes(tokens, 16)
    assert len(chain) == 2  # the partial third block is not cached, so not hashed
    root = hashlib.sha256(pickle.dumps(DEFAULT_SEED, protocol=5)).digest()
    first = hashlib.sha256(pickle.dumps((root, tuple(range(16)), None), protocol=5)).digest()
    assert chain[0] == int.from_bytes(first, "big")
    # A prompt sharing the first block shares its hash, and only that.
    other = block_hashes([*range(16), *range(100, 116)], 16)
    assert other[0] == chain[0]
    assert other[1] != chain[1]
    assert block_hashes(tokens, 16, algo="sha256_cbor")[0] != chain[0]
    assert block_hashes(tokens, 16, seed="42")[0] != chain[0]  # PYTHONHASHSEED changes all
    assert short(chain[0]) == chain[0] & (2**64 - 1)
    with pytest.raises(ValueError, match="not reproducible"):
        block_hashes(tokens, 16, algo="xxhash")
