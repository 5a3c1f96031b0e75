"""One generation request inside the engine model, and its status.

Its own module so that the waiting queues (``queues``) can name the requests they order
without importing the engine model that uses them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class RequestStatus(enum.Enum):
    WAITING = "waiting"  # queued, never run or preempted
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(slots=True, eq=False)
class EngineRequest:
    """One generation request inside the engine model.

    The first six fields are the caller's; the rest are the model's bookkeeping, readable by
    the caller between steps. Requests compare by identity.
    """

    id: str
    prompt_tokens: int
    target_tokens: int | None
    """Tokens it generates before stopping on its own (EOS); None: never (``ignore_eos``)."""
    max_tokens: int
    priority: int = 0
    """Lower is served sooner (vLLM's convention); only the priority policy reads it."""
    arrival: float = 0.0

    status: RequestStatus = RequestStatus.WAITING
    num_output: int = 0
    """Tokens generated so far (kept across preemptions)."""
    num_computed: int = 0
    """Tokens whose KV is in the cache (reset to 0 by a preemption)."""
    num_blocks: int = 0
    num_preemptions: int = 0
    finish_reason: str | None = None
    """"stop" or "length" once finished; "abort" once aborted."""
    first_token_time: float | None = None
    finish_time: float | None = None
    seq: int = 0
    """Order of ``add`` calls, the final tie-break of queue order."""
    limit: int = field(default=0, repr=False)
    limit_reason: str = field(default="length", repr=False)
