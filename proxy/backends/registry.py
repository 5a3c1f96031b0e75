"""Backends by engine kind, or by a ``package.module:Class`` path for a custom dialect."""

from __future__ import annotations

from collections.abc import Mapping

from proxy.backends.base import Backend
from proxy.backends.openai import OpenAIBackend
from proxy.backends.sglang import SGLangBackend
from proxy.backends.sim import SimBackend
from proxy.backends.vllm import VLLMBackend
from proxy.config import EngineConfig
from proxy.errors import ConfigError
from proxy.plugins import import_class

BUILTIN: Mapping[str, type[OpenAIBackend]] = {
    "openai": OpenAIBackend,
    "vllm": VLLMBackend,
    "sglang": SGLangBackend,
    "sim": SimBackend,
}


def load_backend_class(ref: str) -> type[object]:
    """A built-in kind, or ``package.module:Class``."""
    if ref in BUILTIN:
        return BUILTIN[ref]
    if ":" not in ref:
        raise ConfigError(
            f"unknown engine kind {ref!r}; known: {', '.join(BUILTIN)} or package.module:Class"
        )
    return import_class(ref, "backend")


def make_backend(config: EngineConfig) -> Backend:
    cls = load_backend_class(config.kind)
    backend = cls(config)  # type: ignore[call-arg]
    if not isinstance(backend, Backend):
        missing = [
            m
            for m in ("auth_headers", "prepare_body", "health", "list_models", "abort", "load")
            if not callable(getattr(backend, m, None))
        ]
        raise ConfigError(
            f"backend {config.kind!r} does not implement the Backend contract; missing: {missing}"
        )
    return backend
