"""The one place where a policy's priority becomes an engine's priority field.

Policies rank calls by level (0 is the top queue, served first). Engines take an integer whose
meaning depends on the engine and its flags: vLLM serves lower values first; SGLang serves
higher values first unless started with ``--schedule-low-priority-values-first``.
"""

from __future__ import annotations

from typing import Literal

Polarity = Literal["lower-first", "higher-first"]

# Levels are capped here so that "higher-first" values stay positive and small.
MAX_LEVEL = 63

DEFAULT_POLARITY: dict[str, Polarity] = {
    "vllm": "lower-first",
    "sim": "lower-first",
    "sglang": "higher-first",
}


def engine_priority(level: int, polarity: Polarity) -> int:
    """The engine's priority value for a policy level."""
    level = min(max(level, 0), MAX_LEVEL)
    return level if polarity == "lower-first" else MAX_LEVEL - level
