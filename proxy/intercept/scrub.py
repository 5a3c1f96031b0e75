"""Engine scheduling fields belong to the proxy (DESIGN.md rule 12).

A client that sets an engine's priority jumps the engine's queue past every other tenant; one
that sets an engine request id can collide with (and so fail or abort) another client's call.
The proxy strips such fields from bodies unless the client's key may steer engines; the headers
engines read for the same purposes never pass, since only an allowlist of headers is forwarded.
"""

from __future__ import annotations

from typing import Any

# vLLM: priority, vllm_xargs (read by scheduler plug-ins), request_id, data_parallel_rank;
# SGLang: priority, rid.
ENGINE_FIELDS = frozenset({"priority", "vllm_xargs", "rid", "request_id", "data_parallel_rank"})


def strip_engine_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The body without engine scheduling fields; the client's dict is left as it is and
    copied only when there is something to drop."""
    if ENGINE_FIELDS.isdisjoint(body):
        return body
    return {k: v for k, v in body.items() if k not in ENGINE_FIELDS}
