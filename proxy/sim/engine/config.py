"""Settings of one simulated engine (``autellix sim-engine``, or the proxy's embedded one)."""

from __future__ import annotations

import dataclasses
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from proxy.sim.engine.cost import DEFAULT_PRESET, PRESETS, CostModel
from proxy.sim.engine.engine import BLOCK_SIZE, DEFAULT_KV_CAPACITY_TOKENS, EngineModel
from proxy.sim.engine.queues import make_queue

CostPreset = Literal["llama31-8b-a100", "llama31-8b-h100"]


class CostOverrides(BaseModel):
    """Replace single coefficients of the cost preset (seconds; see ``CostModel``)."""

    model_config = ConfigDict(extra="forbid")

    base_s: float | None = Field(default=None, ge=0, description="Fixed cost of a step.")
    decode_per_seq_s: float | None = Field(
        default=None, ge=0, description="Per decoding sequence in a step."
    )
    decode_per_kv_token_s: float | None = Field(
        default=None, ge=0, description="Per context token read by a decoding sequence."
    )
    prefill_per_token_s: float | None = Field(
        default=None, ge=0, description="Per prefilled token in a step."
    )
    prefill_attn_per_pair_s: float | None = Field(
        default=None, ge=0, description="Per (prefilled token, context token) attention pair."
    )


class SimEngineConfig(BaseModel):
    """A simulated vLLM serving Llama-3.1-8B, in real time or faster (``time_scale``)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(
        default="sim-llama-3.1-8b", min_length=1, description="Name of the model it serves."
    )
    served_model_names: list[str] = Field(
        default_factory=list,
        description="Names it answers to (as vLLM's --served-model-name); empty: just `model`. "
        "The first one labels the metrics.",
    )
    cost_preset: CostPreset = Field(
        default=DEFAULT_PRESET, description="Step-time coefficients: the GPU it imitates."
    )
    cost_overrides: CostOverrides = Field(
        default_factory=CostOverrides, description="Coefficients that replace the preset's."
    )
    max_num_seqs: int = Field(default=256, ge=1, description="Most requests running at once.")
    kv_capacity_tokens: int = Field(
        default=DEFAULT_KV_CAPACITY_TOKENS,
        ge=BLOCK_SIZE,
        description="KV cache size in tokens. Default: an A100-80GB at gpu_memory_utilization "
        "0.9 after 16 GB of weights.",
    )
    max_num_batched_tokens: int = Field(
        default=8192, ge=1, description="Token budget of one step (chunked prefill + decodes)."
    )
    scheduling_policy: Literal["fcfs", "priority"] = Field(
        default="priority",
        description="Waiting-queue order, as vLLM's --scheduling-policy. Under fcfs a non-zero "
        "request priority is rejected with 400.",
    )
    time_scale: float = Field(
        default=1.0,
        gt=0,
        description="Real seconds per simulated second: 1 is real time, 0.01 is 100x faster.",
    )
    output_len_min: int = Field(
        default=32, ge=1, description="Shortest natural answer, in tokens (without ignore_eos)."
    )
    output_len_max: int = Field(
        default=512,
        ge=1,
        description="Longest natural answer, in tokens. The default range has a mean of 272, "
        "close to ShareGPT's 277 output tokens.",
    )
    max_model_len: int = Field(
        default=131072, ge=2, description="Longest prompt + answer, in tokens (Llama-3.1: 128k)."
    )
    kv_events_endpoint: str | None = Field(
        default=None,
        description="Publish KV cache events on vLLM's wire (ZMQ PUB) at this address, e.g. "
        "tcp://127.0.0.1:5557 (tcp://127.0.0.1:* for any free port). Needs pyzmq and msgpack.",
    )
    seed: int = Field(
        default=0,
        ge=0,
        lt=2**63,
        description="Changes every answer's words and natural length; same seed, same answers.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> SimEngineConfig:
        if self.output_len_min > self.output_len_max:
            raise ValueError("output_len_min must not exceed output_len_max")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError("max_num_batched_tokens must be at least max_num_seqs (as vLLM)")
        if self.max_model_len > self.kv_capacity_tokens:
            # vLLM refuses to start when one request of max_model_len cannot fit in the cache.
            raise ValueError("max_model_len must not exceed kv_capacity_tokens")
        return self

    def served_names(self) -> list[str]:
        """The model names requests may use."""
        return list(self.served_model_names) or [self.model]

    def cost_model(self) -> CostModel:
        """The preset's cost model with the overrides applied."""
        overrides = self.cost_overrides.model_dump(exclude_none=True)
        return dataclasses.replace(PRESETS[self.cost_preset](), **overrides)

    def engine_model(self) -> EngineModel:
        """A fresh engine model built from these settings."""
        return EngineModel(
            cost=self.cost_model(),
            max_num_seqs=self.max_num_seqs,
            kv_capacity_tokens=self.kv_capacity_tokens,
            max_num_batched_tokens=self.max_num_batched_tokens,
            block_size=BLOCK_SIZE,
            queue=make_queue(self.scheduling_policy),
        )
