"""Shortest prompt first: an example policy plug-in for autellix-proxy.

It implements the four hooks of ``proxy.policies.base.Policy`` directly, without the optional
``BasePolicy`` helper, to show the whole contract in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from proxy.policies.base import Priority
from proxy.records import Call, Program


@dataclass(frozen=True, slots=True)
class ShortestPromptConfig:
    bucket_tokens: int = 512
    levels: int = 8

    def __post_init__(self) -> None:
        if self.bucket_tokens < 1 or self.levels < 1:
            raise ValueError("bucket_tokens and levels must be at least 1")


class ShortestPromptFirst:
    """Calls with shorter prompts first: prefill cost is known on arrival, and short prompts
    are cheap to serve, so they rarely hold up the engine."""

    name: ClassVar[str] = "shortest-prompt"
    live_ok: ClassVar[bool] = True
    Config: ClassVar[type] = ShortestPromptConfig

    def __init__(self, config: ShortestPromptConfig | None = None) -> None:
        self.config = config or ShortestPromptConfig()

    def on_arrival(self, *, call: Call, program: Program, now: float) -> Priority:
        call.start_service = program.service
        return self.priority(call=call, program=program, now=now)

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        bucket = call.prompt_tokens // self.config.bucket_tokens
        call.level = min(bucket, self.config.levels - 1)
        return Priority(call.level, call.arrival)

    def on_service(self, *, call: Call, program: Program, now: float) -> Priority:
        return self.priority(call=call, program=program, now=now)

    def on_finish(self, *, call: Call, program: Program, now: float) -> None:
        # Keep the process table's service meaningful for whoever reads it after us.
        program.service = max(program.service, call.start_service + call.service)
