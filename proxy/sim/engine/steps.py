"""What one engine step did (``StepResult``, ``run_scheduled``: the tokens the scheduled requests
compute and sample, and the step's time), and the arithmetic of a decode stretch: several
decode-only steps run at once (``EngineModel.decode_stretch``).

Pure functions over the running requests; the engine model decides when a stretch may run (no
waiting request could be admitted) and applies its result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proxy.sim.engine.cost import CostModel
from proxy.sim.engine.request import EngineRequest, RequestStatus


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one step did. Every request in ``emitted`` got exactly one new token (no
    speculative decoding), visible at ``end``.

    A stretch of decode-only steps run at once (``EngineModel.decode_stretch``) is one result
    with ``steps`` > 1: ``num_decodes`` counts every token it generated, one per running
    request per step, and ``emitted`` is empty (tokens are counted, not listed)."""

    start: float
    duration: float
    emitted: tuple[EngineRequest, ...] = ()
    finished: tuple[EngineRequest, ...] = ()
    """Those of ``emitted`` that finished with this token (``finish_reason`` set)."""
    preempted: tuple[EngineRequest, ...] = ()
    num_prefill_tokens: int = 0
    num_decodes: int = 0
    steps: int = 1
    end_at: float | None = None
    """When a stretch ends, as its steps' durations add up one by one (``start + duration``
    may differ in the last bit)."""

    @property
    def end(self) -> float:
        return self.start + self.duration if self.end_at is None else self.end_at

    @property
    def idle(self) -> bool:
        """Nothing was scheduled or preempted: the engine has no work (a step that only
        preempted takes no time, and the next step makes progress)."""
        return self.num_prefill_tokens == 0 and self.num_decodes == 0 and not self.preempted


def decode_steps_left(running: Sequence[EngineRequest]) -> int:
    """How many decode-only steps every running request can take before the step in which
    one would finish; 0 when one is not mid-decode (it still prefills or waits for its first
    token)."""
    steps = None
    for r in running:  # every one mid-decode, its next finish more than one step away
        if r.num_output == 0 or r.num_computed != r.prompt_tokens + r.num_output - 1:
            return 0
        left = r.limit - r.num_output - 1
        if steps is None or left < steps:
            steps = left
    return 0 if steps is None else steps


def steps_in_kv(running: Sequence[EngineRequest], steps: int, block: int, free: int) -> int:
    """The most of ``steps`` decode steps whose KV growth fits in ``free`` blocks (then no step
    of the stretch preempts)."""

    # The blocks all requests need over k steps grow with k.
    def need(k: int) -> int:
        return sum(-(-(r.num_computed + k) // block) - r.num_blocks for r in running)

    if need(steps) > free:
        lo, hi = 0, steps  # need(lo) fits, need(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if need(mid) <= free:
                lo = mid
            else:
                hi = mid
        steps = lo
    return steps


def stretch_end(
    cost: CostModel, running: Sequence[EngineRequest], steps: int, now: float, until: float
) -> tuple[int, float]:
    """How many of ``steps`` decode steps from ``now`` run, and when the last ends. Each
    step's duration comes from its own context, added one by one as the caller would; a step
    that would start at or after ``until`` is left to ``EngineModel.step``."""
    n = len(running)
    context = sum(r.num_computed for r in running)
    end, k = now, 0
    while k < steps and (k == 0 or end < until):
        context += n
        end += cost.step_time(
            num_decodes=n, decode_context_tokens=context, num_prefill_tokens=0,
            prefill_attn_pairs=0,
        )  # fmt: skip
        k += 1
    return k, end


def advance_decodes(running: Sequence[EngineRequest], k: int, block: int) -> int:
    """Give every running request ``k`` decoded tokens; the KV blocks that took."""
    used = 0
    for r in running:
        r.num_computed += k
        r.num_output += k
        blocks = -(-r.num_computed // block)
        used += blocks - r.num_blocks
        r.num_blocks = blocks
    return used


def run_scheduled(
    cost: CostModel,
    now: float,
    scheduled: Sequence[EngineRequest],
    counts: Sequence[int],
    preempted: Sequence[EngineRequest],
) -> StepResult:
    """Run one step over the requests the engine scheduled, each with its token count: their
    KV grows by those tokens, each whose tokens now all have KV samples one, and one that
    reaches its limit finishes (status, reason and time set; the engine frees its blocks).
    The step lasts the cost model's time for what it computed."""
    num_decodes = decode_context = prefill_tokens = attn_pairs = 0
    emitted: list[EngineRequest] = []
    finished: list[EngineRequest] = []
    first: list[EngineRequest] = []
    emit, finish = emitted.append, finished.append
    for request, n in zip(scheduled, counts, strict=True):
        before = request.num_computed
        computed = before + n
        request.num_computed = computed
        output = request.num_output
        if n == 1 and output:
            num_decodes += 1
            decode_context += computed
        else:
            prefill_tokens += n
            attn_pairs += n * before + n * (n + 1) // 2
        if computed == request.prompt_tokens + output:
            output += 1
            request.num_output = output
            emit(request)
            if output == 1:
                first.append(request)
            if output >= request.limit:
                finish(request)
    duration = cost.step_time(
        num_decodes=num_decodes,
        decode_context_tokens=decode_context,
        num_prefill_tokens=prefill_tokens,
        prefill_attn_pairs=attn_pairs,
    )
    end = now + duration
    for request in first:
        request.first_token_time = end
    for request in finished:
        request.status = RequestStatus.FINISHED
        request.finish_reason = request.limit_reason
        request.finish_time = end
    return StepResult(
        start=now,
        duration=duration,
        emitted=tuple(emitted),
        finished=tuple(finished),
        preempted=tuple(preempted),
        num_prefill_tokens=prefill_tokens,
        num_decodes=num_decodes,
    )
