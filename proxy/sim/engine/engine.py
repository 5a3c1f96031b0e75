"""The engine model: vLLM V1's continuous-batching scheduler as a pure, synchronous state machine.

No I/O and no clock: every call takes ``now`` from its caller, so the same object runs in the
real-time simulated server, in the discrete-event simulator and in benchmarks.

What one ``step(now)`` does, as vLLM V1's ``Scheduler.schedule`` does:

1. Running requests first, in admission order. Each gets the tokens it still lacks (a decode
   needs 1; a prefill chunk as many as the per-step token budget leaves), and the KV blocks
   those tokens need. When blocks run out, the waiting queue names a victim among the running
   requests (the latest arrival under fcfs, the worst (priority, arrival) under priority); it
   is preempted by recompute: its blocks are freed, its generated tokens kept, and it goes back
   to the waiting queue to re-prefill prompt + generated tokens when it resumes. If the victim
   is the request being scheduled, no further running request is scheduled in this step.
2. Then, only if nobody was preempted, waiting requests in queue order while there is token
   budget, a free sequence slot and KV blocks for their first chunk. A new arrival never
   displaces a running request: priority reorders the waiting queue only.
3. Every scheduled request whose tokens now all have KV samples one new token; one that
   reaches its stop point or ``max_tokens`` finishes and frees its blocks.

With ``chunked_prefill=False`` a step is vLLM 0.6's default instead: waiting requests first,
each with its whole prompt (a prompt over the token budget only as the step's first), while a
sequence slot is free and their KV fits with 1% of the blocks kept free; a step that admitted
any prefills only them, and only a step that admitted none decodes the running requests (the
same running pass, so KV exhaustion preempts as above). Running calls stall while others
prefill: the head-of-line blocking chunked prefill removed.

Time convention: a step starts at ``now`` and lasts ``StepResult.duration`` (from the cost
model). The model's state after ``step`` returns is the state at ``now + duration``: tokens
emitted in the step become visible then, finished requests finish then, and the caller must
not start the next step earlier. Requests added or aborted in between take effect at the next
step (an abort frees its KV at once; a token it produced in the current step is dropped by the
caller).

Cost per step is a few attribute operations per running request, never per token: decodes are
counted, not materialised.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from proxy.sim.engine.cost import CostModel
from proxy.sim.engine.queues import FCFSQueue, WaitingQueue

# Re-exported: the request is the engine model's unit of work and a step's result what it
# returns; their users import them here.
from proxy.sim.engine.request import EngineRequest as EngineRequest
from proxy.sim.engine.request import RequestStatus as RequestStatus
from proxy.sim.engine.steps import StepResult as StepResult
from proxy.sim.engine.steps import (
    advance_decodes,
    decode_steps_left,
    run_scheduled,
    steps_in_kv,
    stretch_end,
)

BLOCK_SIZE = 16
# What an A100-80GB leaves for KV under vLLM's default gpu_memory_utilization=0.9: 80 GiB x 0.9
# minus 16.06 GB of bf16 weights, at 128 KiB per token, rounded down to whole 16-token blocks.
# (Activations and CUDA graphs, which vLLM also subtracts, are ignored: a real server reports
# a few percent less.)
DEFAULT_KV_CAPACITY_TOKENS = (int(80 * 2**30 * 0.9 - 16.06e9) // (128 * 2**10)) // 16 * 16


class EngineModel:
    """vLLM V1-style scheduler and KV block manager over one simulated GPU (no prefix cache)."""

    def __init__(
        self,
        *,
        cost: CostModel | None = None,
        max_num_seqs: int = 256,
        kv_capacity_tokens: int = DEFAULT_KV_CAPACITY_TOKENS,
        max_num_batched_tokens: int = 8192,
        block_size: int = BLOCK_SIZE,
        queue: WaitingQueue | None = None,
        chunked_prefill: bool = True,
    ) -> None:
        if max_num_seqs < 1 or block_size < 1:
            raise ValueError("max_num_seqs and block_size must be at least 1")
        if max_num_batched_tokens < max_num_seqs:
            # As vLLM: with fewer, a full batch of decodes could not all run in one step.
            raise ValueError("max_num_batched_tokens must be at least max_num_seqs")
        if kv_capacity_tokens < block_size:
            raise ValueError("kv_capacity_tokens must hold at least one block")
        self.cost = cost if cost is not None else CostModel.llama31_8b_a100()
        self.max_num_seqs = max_num_seqs
        # Most requests admitted at once: max_num_seqs, or a caller's admission cap below it.
        self.seq_limit = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.block_size = block_size
        self.num_blocks = kv_capacity_tokens // block_size
        self.chunked_prefill = chunked_prefill
        self._watermark = self.num_blocks // 100
        # vLLM's default policy is fcfs; a program-aware queue plugs in here.
        self.queue: WaitingQueue = queue if queue is not None else FCFSQueue()
        self._free_blocks = self.num_blocks
        self._running: list[EngineRequest] = []
        self._requests: dict[str, EngineRequest] = {}
        self._seq = itertools.count()
        self.num_preemptions = 0

    # -- the caller's view ---------------------------------------------------------------

    @property
    def has_work(self) -> bool:
        return bool(self._running) or len(self.queue) > 0

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self.queue)

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks in use, 0..1 (vLLM's ``kv_cache_usage_perc``)."""
        return 1.0 - self._free_blocks / self.num_blocks

    @property
    def running(self) -> tuple[EngineRequest, ...]:
        """Running requests in admission order."""
        return tuple(self._running)

    @property
    def waiting(self) -> tuple[EngineRequest, ...]:
        """Waiting requests in the order they will be admitted."""
        return tuple(self.queue)

    def get(self, request_id: str) -> EngineRequest | None:
        """The waiting or running request with this id."""
        return self._requests.get(request_id)

    # -- changes -------------------------------------------------------------------------

    def add(self, request: EngineRequest, now: float) -> None:
        """Queue a new request. ``now`` is unused by the vLLM policies (they order by
        ``request.arrival``) and kept so callers need not know that.

        Raises ``ValueError`` for a duplicate id, empty prompt, ``max_tokens`` < 1, or a request
        that could never fit in the KV cache even alone (it would be preempted forever).
        """
        if request.id in self._requests:
            raise ValueError(f"request id {request.id!r} is already in the engine")
        if request.prompt_tokens < 1 or request.max_tokens < 1:
            raise ValueError("a request needs at least one prompt token and max_tokens >= 1")
        if request.target_tokens is not None and request.target_tokens < 1:
            raise ValueError("target_tokens must be at least 1 (or None)")
        limit = request.max_tokens
        if request.target_tokens is not None and request.target_tokens < limit:
            limit, request.limit_reason = request.target_tokens, "stop"
        else:
            request.limit_reason = "length"
        # The last token is sampled, never computed, so the peak KV is prompt + limit - 1.
        if self._blocks_for(request.prompt_tokens + limit - 1) > self.num_blocks:
            raise ValueError(
                f"request {request.id!r} needs more KV than the engine has "
                f"({self.num_blocks * self.block_size} tokens)"
            )
        request.limit = limit
        request.seq = next(self._seq)
        request.status = RequestStatus.WAITING
        self._requests[request.id] = request
        self.queue.push(request)

    def sort_running(self, key: Callable[[EngineRequest], Any]) -> None:
        """Reorder the running requests by ``key``, smallest first: the order the next steps
        serve them in (token budget, KV growth). A program-aware scheduler (the simulator's
        policy queue) serves its best calls first, as Autellix picks each round's batch."""
        self._running.sort(key=key)

    def abort(self, request_id: str, now: float) -> bool:
        """Drop a waiting or running request and free its KV; False if there is none."""
        request = self._requests.pop(request_id, None)
        if request is None:
            return False
        if request.status is RequestStatus.RUNNING:
            self._running.remove(request)
            self._free_blocks += request.num_blocks
            request.num_blocks = 0
        else:
            self.queue.remove(request)
        request.status = RequestStatus.ABORTED
        request.finish_reason = "abort"
        request.finish_time = now
        return True

    def step(self, now: float) -> StepResult:
        """Schedule and run one step starting at ``now`` (see the module docstring)."""
        if not self.chunked_prefill:
            return self._step_prefill_first(now)
        scheduled: list[EngineRequest] = []
        counts: list[int] = []
        preempted: list[EngineRequest] = []
        budget = self._schedule_running(self.max_num_batched_tokens, scheduled, counts, preempted)
        if not preempted:
            self._admit(budget, scheduled, counts, whole=False)
        return self._run(now, scheduled, counts, preempted)

    def decode_stretch(self, now: float, until: float) -> StepResult | None:
        """The steps from ``now`` that would each only decode every running request, run at
        once: the same states and times as calling ``step`` for each, at a cost that does not
        grow with their number. A stretch ends before the step in which a request would
        finish, KV would run out or a waiting request could be admitted, and before the first
        step that would start at or after ``until`` (the caller's next event, which could
        change the engine). None when fewer than two steps qualify: call ``step``."""
        running = self._running
        n = len(running)
        if n == 0 or n > self.max_num_batched_tokens:
            return None
        steps = decode_steps_left(running)
        # Chunked steps admit with the budget the decodes leave, vLLM 0.6's before any decode.
        budget = self.max_num_batched_tokens - (n if self.chunked_prefill else 0)
        if steps < 2:
            return None
        if self._fit_head(budget, whole=not self.chunked_prefill, first=True) is not None:
            return None  # it would join the next step (decodes only make KV scarcer)
        steps = steps_in_kv(running, steps, self.block_size, self._free_blocks)
        if steps < 2:
            return None
        k, end = stretch_end(self.cost, running, steps, now, until)
        if k < 2:
            return None
        self._free_blocks -= advance_decodes(running, k, self.block_size)
        return StepResult(start=now, duration=end - now, num_decodes=n * k, steps=k, end_at=end)

    def _step_prefill_first(self, now: float) -> StepResult:
        # vLLM 0.6 without chunked prefill: a step prefills whole prompts of waiting requests
        # and nothing else, or, when none can be admitted, decodes every running request.
        scheduled: list[EngineRequest] = []
        counts: list[int] = []
        preempted: list[EngineRequest] = []
        self._admit(self.max_num_batched_tokens, scheduled, counts, whole=True)
        if not scheduled:
            self._schedule_running(self.max_num_batched_tokens, scheduled, counts, preempted)
        return self._run(now, scheduled, counts, preempted)

    def _schedule_running(
        self,
        budget: int,
        scheduled: list[EngineRequest],
        counts: list[int],
        preempted: list[EngineRequest],
    ) -> int:
        """The running pass: each running request gets the tokens it lacks, preempting
        victims when KV runs out. Returns the token budget left."""
        running = self._running
        block = self.block_size
        free = self._free_blocks  # kept in a local; written back before any preemption
        i = 0
        while i < len(running) and budget > 0:
            request = running[i]
            computed = request.num_computed
            n = request.prompt_tokens + request.num_output - computed
            if n > budget:
                n = budget
            need = -(-(computed + n) // block) - request.num_blocks
            if need > free:
                self._free_blocks = free
                stopped = False
                while need > self._free_blocks:
                    victim = self.queue.victim(running)
                    at = running.index(victim)
                    self._preempt(at)
                    preempted.append(victim)
                    if victim is request:
                        stopped = True
                        break
                    if at < i:
                        i -= 1
                        k = scheduled.index(victim)
                        scheduled.pop(k)
                        budget += counts.pop(k)
                free = self._free_blocks
                if stopped:
                    break  # as vLLM: a request that had to preempt itself ends the running pass
            free -= need
            request.num_blocks += need
            scheduled.append(request)
            counts.append(n)
            budget -= n
            i += 1
        self._free_blocks = free
        return budget

    def _admit(
        self, budget: int, scheduled: list[EngineRequest], counts: list[int], *, whole: bool
    ) -> None:
        """Waiting requests in queue order while the head fits (``_fit_head``)."""
        queue, running = self.queue, self._running
        while (fit := self._fit_head(budget, whole=whole, first=not scheduled)) is not None:
            request, n, need = fit
            queue.pop()
            request.status = RequestStatus.RUNNING
            self._free_blocks -= need
            request.num_blocks += need
            running.append(request)
            scheduled.append(request)
            counts.append(n)
            budget -= n

    def _fit_head(
        self, budget: int, *, whole: bool, first: bool
    ) -> tuple[EngineRequest, int, int] | None:
        """The head of the waiting queue, the tokens it would be admitted with and the KV
        blocks they need, if it can be admitted now: there is token budget, a free sequence
        slot and KV for its first chunk (``whole``: its whole prompt, which may pass the budget
        only as the step's ``first``, and vLLM 0.6's 1% watermark of free blocks kept while
        anything runs). vLLM does not skip ahead of a head that does not fit."""
        queue = self.queue
        if budget <= 0 or not len(queue) or len(self._running) >= self.seq_limit:
            return None
        request = queue.peek()
        left = request.prompt_tokens + request.num_output - request.num_computed
        if whole:
            if left > budget and not first:
                return None  # a prompt longer than the budget runs alone
            n = left
        else:
            n = min(left, budget)
        need = self._blocks_for(request.num_computed + n) - request.num_blocks
        reserve = self._watermark if whole and self._running else 0
        return None if need > self._free_blocks - reserve else (request, n, need)

    # -- internals -----------------------------------------------------------------------

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def _preempt(self, at: int) -> None:
        victim = self._running.pop(at)
        self._free_blocks += victim.num_blocks
        victim.num_blocks = 0
        victim.num_computed = 0
        victim.num_preemptions += 1
        victim.status = RequestStatus.WAITING
        self.num_preemptions += 1
        self.queue.prepend(victim)

    def _run(
        self,
        now: float,
        scheduled: list[EngineRequest],
        counts: list[int],
        preempted: list[EngineRequest],
    ) -> StepResult:
        result = run_scheduled(self.cost, now, scheduled, counts, preempted)
        if result.finished:
            for request in result.finished:
                self._free_blocks += request.num_blocks
                request.num_blocks = 0
                del self._requests[request.id]
            self._running = [r for r in self._running if r.status is RequestStatus.RUNNING]
        return result
