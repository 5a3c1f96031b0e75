"""The simulated engine speaks vLLM's dialect (priority, request ids, abort, metrics)."""

from __future__ import annotations

from proxy.backends.vllm import VLLMBackend


class SimBackend(VLLMBackend):
    """Same as vLLM; a kind of its own so metrics and logs say which engines are simulated."""
