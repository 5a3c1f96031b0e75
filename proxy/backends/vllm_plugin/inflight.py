"""What vLLM's async-scheduling counters say about a request, for the preemption walk.

Under async scheduling (GPU builds) step N+1 is scheduled, with output placeholders, before
step N's output arrives, so at scheduling time a request may have output still in flight. The
synchronous scheduler never does, and both tests below are then always false. Read from the
request's counters only (duck-typed: nothing here imports vLLM), as vLLM 0.32.0 reads them.
"""

from __future__ import annotations

from typing import Any


def must_wait_for_output(request: Any) -> bool:
    """A waiting request that vLLM will not resume this step: it was preempted while a step
    of it was in flight, and that output (to be delivered) has not arrived yet. It drains
    within the pipeline's depth (one step, or PP steps with pipeline parallelism)."""
    return bool(request.num_stale_output_tokens) and not request.drop_stale_output


def last_step_in_flight(request: Any) -> bool:
    """A running request whose final token is in flight: vLLM schedules it no more, and it
    ends when that output arrives (vLLM's own test, which allows for rejected draft tokens).
    The synchronous scheduler would already have finished it and freed its slot."""
    placeholders: int = request.num_output_placeholders
    end: int = request.num_prompt_tokens + request.max_tokens
    return placeholders > 0 and request.num_computed_tokens + 2 - placeholders >= end
