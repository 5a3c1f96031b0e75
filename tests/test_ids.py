"""Engine request ids: random, well-formed and unique, across the batches they are read in."""

from __future__ import annotations

import re

from proxy.ids import UpstreamIds, valid_request_id


def test_engine_request_ids_are_random_hex_and_unique_across_batches() -> None:
    ids = UpstreamIds(batch=4)
    made = [ids.next() for _ in range(50)]
    assert len(set(made)) == 50
    assert all(re.fullmatch(r"req-[0-9a-f]{24}", i) and valid_request_id(i) for i in made)
    assert UpstreamIds().next() != UpstreamIds().next()
