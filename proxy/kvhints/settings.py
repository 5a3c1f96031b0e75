"""The ``routing`` section of the config: which balancer, its tuning, the prefix index and
the circuit breaker (docs/routing.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from proxy.kvhints.balancers.base import AUTELLIX_THRESHOLD, Tuning


class RoutingSettings(BaseModel):
    """How calls are spread over engines, and how failing engines are kept out."""

    model_config = ConfigDict(extra="forbid")

    balancer: str = Field(
        default="prefix-aware",
        description="round-robin, least-loaded, autellix, prefix-aware, a package.module:Class "
        "path or an entry point in group autellix.balancers.",
    )
    long_prompt_tokens: int = Field(
        default=AUTELLIX_THRESHOLD,
        ge=0,
        description="Calls with longer prompts stay on their program's engine (autellix, and "
        "prefix-aware when no prefix match decides); shorter ones go to the least-loaded engine.",
    )
    guard_factor: float = Field(
        default=2.0,
        ge=1.0,
        description="Load guard: an engine a call prefers (its program's, or the one holding its "
        "prefix) is passed over when it holds more than guard_factor x the least-loaded "
        "engine's requests plus guard_slack.",
    )
    guard_slack: int = Field(default=4, ge=0, description="See guard_factor.")
    min_match_tokens: int = Field(
        default=256,
        ge=0,
        description="A prefix match steers a call only when the engine holds at least this many "
        "more of its prompt's tokens than the least-loaded engine.",
    )
    block_tokens: int = Field(
        default=16, ge=1, description="Tokens per KV block, as the engines' block size."
    )
    index_blocks: int = Field(
        default=200_000,
        ge=1,
        description="Most prefix blocks the index keeps per engine (the oldest go first).",
    )
    breaker_backoff_s: float = Field(
        default=5.0,
        ge=0,
        description="Circuit breaker: an ejected engine is not re-admitted, even with a passing "
        "health check, for this long after its first trip; the wait doubles at each trip in a "
        "row, up to breaker_max_backoff_s.",
    )
    breaker_max_backoff_s: float = Field(
        default=120.0, ge=0, description="Longest wait before a tripped engine is tried again."
    )

    def tuning(self) -> Tuning:
        return Tuning(
            threshold=self.long_prompt_tokens,
            guard_factor=self.guard_factor,
            guard_slack=self.guard_slack,
            min_match_blocks=-(-self.min_match_tokens // self.block_tokens),
        )
