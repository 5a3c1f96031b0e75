"""vLLM (V1 engine): request id by header, abort by id (dev mode), load from /metrics."""

from __future__ import annotations

from typing import Any

import aiohttp

from proxy.backends.base import CallHints, Capabilities, EngineLoad
from proxy.backends.openai import OpenAIBackend
from proxy.backends.priority import DEFAULT_POLARITY, engine_priority
from proxy.backends.promtext import sum_samples

_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)


class VLLMBackend(OpenAIBackend):
    """vLLM's OpenAI server. The request id travels in ``X-Request-Id``; vLLM names the request
    ``chatcmpl-<id>`` (chat) or ``cmpl-<id>-0`` (completions) internally, so an abort names both."""

    capabilities = Capabilities(native_priority=True, abort=True, resume=True)
    health_path = "/health"
    metric_running = "vllm:num_requests_running"
    metric_waiting = "vllm:num_requests_waiting"
    metric_kv = "vllm:kv_cache_usage_perc"

    def sends_priority(self) -> bool:
        if self.config.priority is not None:
            return self.config.priority
        return self.config.kind == "sim"

    def prepare_body(
        self, body: dict[str, Any], *, request_id: str, hints: CallHints | None = None
    ) -> dict[str, Any]:
        if hints is None:
            return body
        sends_priority = self.sends_priority() and "priority" not in body
        if not sends_priority and not self.config.scheduler_plugin:
            return body  # nothing to add: the client's bytes can go on as they came
        out = dict(body)
        if sends_priority:
            polarity = self.config.priority_polarity or DEFAULT_POLARITY.get(
                self.config.kind, "lower-first"
            )
            out["priority"] = engine_priority(hints.level, polarity)
        if self.config.scheduler_plugin:
            out["vllm_xargs"] = {
                **(body.get("vllm_xargs") or {}),
                "autellix_program": hints.program_id,
                "autellix_thread": hints.thread,
                "autellix_call": hints.call_id,
                "autellix_service": hints.service,
                "autellix_level": hints.level,
            }
        return out

    def abort_ids(self, request_id: str) -> list[str]:
        # External ids: vLLM adds a random suffix to its internal ids, but /abort_requests
        # takes the external ones. Never send an empty list: that aborts every request.
        return [request_id, f"chatcmpl-{request_id}", f"cmpl-{request_id}-0"]

    async def abort(self, session: aiohttp.ClientSession, request_id: str) -> bool:
        try:
            async with session.post(
                self.base_url + "/abort_requests",
                json={"request_ids": self.abort_ids(request_id)},
                headers=self.auth_headers(None),
                timeout=_PROBE_TIMEOUT,
            ) as resp:
                return resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def load(self, session: aiohttp.ClientSession) -> EngineLoad:
        names = (self.metric_running, self.metric_waiting, self.metric_kv)
        try:
            async with session.get(
                self.base_url + "/metrics", headers=self.auth_headers(None), timeout=_PROBE_TIMEOUT
            ) as resp:
                if resp.status != 200:
                    return EngineLoad()
                text = await resp.text()
        except (TimeoutError, aiohttp.ClientError, UnicodeDecodeError):
            return EngineLoad()
        found = sum_samples(text, names)
        running, waiting = found.get(self.metric_running), found.get(self.metric_waiting)
        return EngineLoad(
            running=None if running is None else int(running),
            waiting=None if waiting is None else int(waiting),
            kv_usage=found.get(self.metric_kv),
        )
