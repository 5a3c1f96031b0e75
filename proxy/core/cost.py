"""The service unit every layer charges calls in."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_DECODE_TOKEN_S = 0.015
DEFAULT_PREFILL_TOKEN_S = DEFAULT_DECODE_TOKEN_S / 40


@dataclass(frozen=True, slots=True)
class ServiceCost:
    """Estimated engine seconds: ``prompt_tokens * prefill_token_s + output_tokens *
    decode_token_s``. The prompt is charged once its prefill is done: at the first output token,
    or at a successful finish that produced none (``done``). Recomputation after a preemption is
    the engine's waste, not service the call attained, so it is never charged.

    ``decode_token_s`` is the cost of one decode step (placeholder default 0.015 s; pass the
    cost model of the engines in use); ``prefill_token_s`` of one prompt token (default 1/40 of
    a decode step)."""

    decode_token_s: float = DEFAULT_DECODE_TOKEN_S
    prefill_token_s: float = DEFAULT_PREFILL_TOKEN_S

    def of(self, *, prompt_tokens: int, output_tokens: int, done: bool = False) -> float:
        prefill = prompt_tokens if done or output_tokens > 0 else 0
        return prefill * self.prefill_token_s + output_tokens * self.decode_token_s
