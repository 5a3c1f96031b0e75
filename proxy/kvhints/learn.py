"""Learning a vLLM engine's block hashes for a prompt, off the request path.

After a call to a vLLM engine that publishes KV events has been answered, its prompt is sent
to the engine's ``/tokenize`` (the same template and special tokens as the call), the tokens
are hashed as the engine hashes them (``proxy.kvhints.enginehash``), and the router pairs the
prompt's blocks with the engine's (``Router.learned``). The next call sharing the prompt's
text is then matched against what the engine's events say it holds, evictions included.

It is best effort: at most ``MAX_INFLIGHT`` prompts are being learned at once (more are
skipped), a failure is counted and logged at DEBUG, and nothing waits on it. Prompts whose
blocks the engine hashes with extra keys (``cache_salt``, images or audio) are skipped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import aiohttp

from proxy.kvhints.enginehash import block_hashes
from proxy.kvhints.pool import EngineState
from proxy.kvhints.router import Router

log = logging.getLogger("autellix.routing")

MAX_INFLIGHT = 4
TIMEOUT_S = 10.0
BLOCK_SIZE_WAIT_S = 5.0
# Chat fields that change the tokens the template renders.
_CHAT_FIELDS = (
    "tools",
    "chat_template",
    "chat_template_kwargs",
    "add_generation_prompt",
    "continue_final_message",
    "add_special_tokens",
)


def learns(engine: EngineState) -> bool:
    """Does this engine's prompt tokenization teach the index anything?"""
    config = engine.backend.config
    return config.kind == "vllm" and bool(config.kv_events_url) and config.kv_hash_algo != "none"


def tokenize_request(model: str, body: Mapping[str, Any], *, chat: bool) -> dict[str, Any] | None:
    """The /tokenize body that yields the tokens the engine cached for this call's prompt;
    None when they cannot be had or would be hashed with extra keys."""
    if body.get("cache_salt") is not None:
        return None
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        for message in messages:
            content = message.get("content") if isinstance(message, Mapping) else None
            if isinstance(content, list) and any(
                isinstance(p, Mapping) and p.get("type") not in (None, "text") for p in content
            ):
                return None  # multimodal parts: the engine hashes them into the blocks
        out: dict[str, Any] = {"model": model, "messages": messages}
        out.update({k: body[k] for k in _CHAT_FIELDS if k in body})
        return out
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        return None  # token ids are hashed below without asking; batches are not learned
    out = {"model": model, "prompt": prompt}
    if "add_special_tokens" in body:
        out["add_special_tokens"] = body["add_special_tokens"]
    return out


class Learner:
    """Spawns the learning of finished calls' prompts (``spawn`` runs a task the app owns)."""

    def __init__(
        self,
        router: Router,
        session: Callable[[], aiohttp.ClientSession],
        spawn: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self._router = router
        self._session = session
        self._spawn = spawn
        self._inflight = 0

    def after(
        self,
        engine: EngineState,
        model: str,
        body: Mapping[str, Any],
        *,
        chat: bool,
        blocks: tuple[int, ...],
    ) -> None:
        """A call to ``engine`` was answered: learn its prompt's engine blocks, if useful."""
        if not blocks or not learns(engine) or self._router.hashes is None:
            return
        prompt = body.get("prompt")
        tokens = (
            prompt
            if not chat and isinstance(prompt, list) and all(type(t) is int for t in prompt)
            else None
        )
        request = None if tokens is not None else tokenize_request(model, body, chat=chat)
        if tokens is None and request is None:
            return
        if self._inflight >= MAX_INFLIGHT:
            self._router.learning[(engine.name, "skipped")] += 1
            return
        self._inflight += 1
        self._spawn(self._learn(engine, model, blocks, tokens, request))

    async def _learn(
        self,
        engine: EngineState,
        model: str,
        blocks: tuple[int, ...],
        tokens: list[int] | None,
        request: dict[str, Any] | None,
    ) -> None:
        try:
            if tokens is None:
                tokens = await self._tokenize(engine, request or {})
            config = engine.backend.config
            size = await self._block_size(engine.name)
            if size is None:
                raise ValueError("the engine's block size is not known (no BlockStored yet)")
            hashes = block_hashes(tokens, size, algo=config.kv_hash_algo, seed=config.kv_hash_seed)
            self._router.learned(engine.name, model, blocks, hashes)
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as exc:
            self._router.learning[(engine.name, "failed")] += 1
            log.debug("learning engine %s's block hashes failed: %s", engine.name, exc)
        finally:
            self._inflight -= 1

    async def _block_size(self, engine: str) -> int | None:
        """The engine's block size, as its BlockStored events say; they may trail the answer a
        little, so wait for them a while."""
        index = self._router.index
        for _ in range(int(BLOCK_SIZE_WAIT_S / 0.05)):
            size = None if index is None else index.block_sizes.get(engine)
            if size is not None:
                return size
            await asyncio.sleep(0.05)
        return None

    async def _tokenize(self, engine: EngineState, request: dict[str, Any]) -> list[int]:
        backend = engine.backend
        async with self._session().post(
            backend.base_url + "/tokenize",
            json=request,
            headers=backend.auth_headers(None),
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
        ) as response:
            if response.status != 200:
                raise ValueError(f"/tokenize answered {response.status}")
            data = await response.json()
        tokens = data["tokens"]
        if not isinstance(tokens, list) or not all(type(t) is int for t in tokens):
            raise ValueError("/tokenize gave no list of token ids")
        return tokens
