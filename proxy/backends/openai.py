"""Any OpenAI-compatible server: no priorities, no abort; health is a models listing."""

from __future__ import annotations

from typing import Any

import aiohttp

from proxy.backends.base import CallHints, Capabilities, EngineLoad
from proxy.config import EngineConfig

_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5)


class OpenAIBackend:
    """The generic dialect. Engine-specific backends subclass it and override what differs."""

    capabilities = Capabilities()
    health_path = "/v1/models"

    def __init__(self, config: EngineConfig) -> None:
        self.config = config

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def base_url(self) -> str:
        return self.config.url

    def auth_headers(self, client_authorization: str | None) -> dict[str, str]:
        if client_authorization is not None:
            return {"Authorization": client_authorization}
        if self.config.api_key is not None:
            return {"Authorization": f"Bearer {self.config.api_key.get_secret_value()}"}
        return {}

    def prepare_body(
        self, body: dict[str, Any], *, request_id: str, hints: CallHints | None = None
    ) -> dict[str, Any]:
        return body

    async def health(self, session: aiohttp.ClientSession) -> bool:
        try:
            async with session.get(
                self.base_url + self.health_path,
                headers=self.auth_headers(None),
                timeout=_PROBE_TIMEOUT,
            ) as resp:
                return resp.status < 500 and resp.status not in (401, 403)
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def list_models(self, session: aiohttp.ClientSession) -> list[str]:
        async with session.get(
            self.base_url + "/v1/models", headers=self.auth_headers(None), timeout=_PROBE_TIMEOUT
        ) as resp:
            resp.raise_for_status()
            payload = await resp.json(content_type=None)
        data = payload.get("data") if isinstance(payload, dict) else None
        return [m["id"] for m in data or () if isinstance(m, dict) and isinstance(m.get("id"), str)]

    async def abort(self, session: aiohttp.ClientSession, request_id: str) -> bool:
        return False

    async def load(self, session: aiohttp.ClientSession) -> EngineLoad:
        return EngineLoad()
