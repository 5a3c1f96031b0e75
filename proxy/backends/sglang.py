"""SGLang: request id in the body's ``rid``, abort by rid, load from /metrics."""

from __future__ import annotations

from typing import Any

import aiohttp

from proxy.backends.base import CallHints, Capabilities
from proxy.backends.priority import DEFAULT_POLARITY, engine_priority
from proxy.backends.vllm import VLLMBackend

_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)


class SGLangBackend(VLLMBackend):
    """SGLang's OpenAI server (start it with ``--enable-metrics`` for load figures)."""

    capabilities = Capabilities(native_priority=True, preemption=True, abort=True, resume=True)
    metric_running = "sglang:num_running_reqs"
    metric_waiting = "sglang:num_queue_reqs"
    metric_kv = "sglang:token_usage"

    def prepare_body(
        self, body: dict[str, Any], *, request_id: str, hints: CallHints | None = None
    ) -> dict[str, Any]:
        out = dict(body)
        if hints is not None and self.sends_priority() and "priority" not in body:
            polarity = self.config.priority_polarity or DEFAULT_POLARITY["sglang"]
            out["priority"] = engine_priority(hints.level, polarity)
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
