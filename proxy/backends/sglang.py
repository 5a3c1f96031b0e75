"""SGLang: request id in the body's ``rid``, abort by rid, load from /metrics.

The ``priority`` sent with each call orders SGLang's waiting queue and, when SGLang runs with
``--radix-eviction-policy priority``, its radix cache's eviction too: a cached node keeps the
highest priority of the requests that inserted or matched it, and the lowest go first (LRU
among equals). Under the default polarity the proxy sends ``63 - level``, so the contexts of
the programs the policy ranks worst are evicted first: program-aware eviction without a
plug-in (docs/vllm.md, "SGLang").
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp

from proxy.backends.base import CallHints, Capabilities
from proxy.backends.priority import DEFAULT_POLARITY, Polarity, engine_priority
from proxy.backends.vllm import VLLMBackend
from proxy.config import EngineConfig

_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)
logger = logging.getLogger(__name__)


class SGLangBackend(VLLMBackend):
    """SGLang's OpenAI server (start it with ``--enable-metrics`` for load figures)."""

    capabilities = Capabilities(native_priority=True, preemption=True, abort=True, resume=True)
    metric_running = "sglang:num_running_reqs"
    metric_waiting = "sglang:num_queue_reqs"
    metric_kv = "sglang:token_usage"

    def __init__(self, config: EngineConfig) -> None:
        super().__init__(config)
        if self.sends_priority() and self.polarity() == "lower-first":
            # One field orders both the queue and the radix cache, whose priority eviction
            # drops lower values first: with lower-first values the best-ranked would go first.
            logger.warning(
                "engine %s: priority_polarity lower-first also orders SGLang's radix cache "
                "under --radix-eviction-policy priority, which evicts lower values first: the "
                "best-ranked programs' contexts would be evicted first",
                config.name,
            )

    def polarity(self) -> Polarity:
        return self.config.priority_polarity or DEFAULT_POLARITY["sglang"]

    def prepare_body(
        self, body: dict[str, Any], *, request_id: str, hints: CallHints | None = None
    ) -> dict[str, Any]:
        out = dict(body)
        if hints is not None and self.sends_priority() and "priority" not in body:
            out["priority"] = engine_priority(hints.level, self.polarity())
        out.setdefault("rid", request_id)
        return out

    async def abort(self, session: aiohttp.ClientSession, request_id: str) -> bool:
        try:
            async with session.post(
                self.base_url + "/abort_request",
                json={"rid": request_id},
                headers=self.auth_headers(None),
                timeout=_PROBE_TIMEOUT,
            ) as resp:
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False
