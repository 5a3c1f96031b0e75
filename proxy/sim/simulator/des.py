"""The discrete-event simulator: agent programs, a scheduling policy and engines, in virtual time.

Engines are the simulated engine server's own ``EngineModel``, the policy is the live proxy's
own policy object driven through the Policy contract; only the clock differs. Events, in time
order (ties: releases, then resumes, then kicks, so calls released together share a step):

- *release*: a program arrived, or a call's parents finished and its tool time passed; the
  balancer picks an engine, the policy ranks the call (``on_arrival``) and it is queued;
- *resume*: a call preempted for priority is back from host memory (swap);
- *kick*: an idle engine starts a step;
- *step end*: finished calls finish (``on_finish``; children are scheduled) and the engine
  starts its next step at once if it has work.

Under contention (calls waiting, or the last step's token budget used up) and at most once per
``rerank_interval_s``, an engine's ``PolicyQueue`` re-ranks its calls with the policy, the
running calls are served in that order (the token budget goes to the best first), and running
calls the queue names are preempted for better waiting ones: aborted, and resubmitted with
their KV swapped out and back (``EngineShape.preemption``) or to recompute it.

Per engine (``fleet.py``): a prefix cache (``prefix_cache.py``, ``SimConfig.retention``) and an
admission cap (``capping.py``, ``SimConfig.cap``); docs/simulator.md describes both.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from typing import Any

from proxy.core import lifecycle
from proxy.core.cost import ServiceCost
from proxy.kvhints.balancers import Route
from proxy.policies.base import Policy
from proxy.records import Call, Program
from proxy.sim.engine.engine import EngineRequest, StepResult
from proxy.sim.simulator.balancer import Balancer, engine_loads, make_balancer
from proxy.sim.simulator.bookkeeping import CallRun, EngineSlot, ProgramRun
from proxy.sim.simulator.fleet import build_engines
from proxy.sim.simulator.policy_queue import Tracked
from proxy.sim.simulator.results import SimResult
from proxy.sim.simulator.runs import call_result, program_result, program_run, resubmission
from proxy.sim.simulator.simconfig import SimConfig
from proxy.sim.simulator.workloads import CallSpec, ProgramSpec
from proxy.trace import TraceRecorder

_RELEASE, _RESUME, _KICK, _STEP_END = 0, 1, 2, 3


class Simulator:
    """Runs programs to completion under one policy; build one per run (it keeps the state)."""

    def __init__(
        self,
        config: SimConfig,
        policy: Policy,
        *,
        balancer: Balancer | None = None,
        recorder: TraceRecorder | None = None,
    ) -> None:
        if config.engines < 1 or config.rerank_interval_s <= 0:
            raise ValueError("engines must be at least 1 and rerank_interval_s positive")
        self.config = config
        self.policy = policy
        self.balancer = balancer if balancer is not None else make_balancer(config.balancer)
        self.recorder = recorder
        self.prefill_s, self.decode_s = config.service_weights()
        self._cost = ServiceCost(decode_token_s=self.decode_s, prefill_token_s=self.prefill_s)
        self._on_finish = lifecycle.policy_hook(policy)
        self._program_oracle = config.oracle == "program"
        self.engines = build_engines(config, policy, self._on_head)
        self._caches = [e.cache for e in self.engines if e.cache is not None]
        # (time, kind, sequence, payload): at equal times releases go first, then kicks. The
        # payload's type follows the kind (see ``run``); Any spares the loop a cast per event.
        self._events: list[tuple[float, int, int, Any]] = []
        self._seq = 0
        self._result = SimResult()
        self._in_system = 0
        self._swapped = 0
        self._last_t = 0.0

    # -- the loop --------------------------------------------------------------------------

    def run(self, programs: Sequence[ProgramSpec]) -> SimResult:
        start = time.process_time()
        for spec in programs:
            self._push(spec.arrival, _RELEASE, (spec, None))
        events, result = self._events, self._result
        # One pass per event (a step end per engine step): locals instead of attribute
        # look-ups, and no window accounting call when there is no window.
        pop, step_end = heapq.heappop, self._step_end
        account = self._account if self.config.window is not None else None
        now = 0.0
        while events:
            now, kind, _, payload = pop(events)
            if account is not None:
                account(now)
            if kind == _STEP_END:
                engine: EngineSlot
                step: StepResult
                engine, step = payload
                step_end(engine, step, now)
            elif kind == _RESUME:
                self._resume(payload, now)
            elif kind == _KICK:
                engine = payload
                engine.kicked = False
                if not engine.busy:
                    self._step(engine, now)
            else:
                self._release(payload, now)
        result.end = now
        result.cpu_s = time.process_time() - start
        result.engine_preemptions = sum(e.model.num_preemptions for e in self.engines)
        if self.recorder is not None:
            self.recorder.flush()
        return result

    def _push(self, t: float, kind: int, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (t, kind, self._seq, payload))

    def _account(self, now: float) -> None:
        window = self.config.window
        if window is not None and now > self._last_t:
            lo, hi = max(self._last_t, window[0]), min(now, window[1])
            if hi > lo:
                self._result.window_area += self._in_system * (hi - lo)
        self._last_t = now

    # -- releases --------------------------------------------------------------------------

    def _release(self, payload: tuple[Any, int | None], now: float) -> None:
        item, index = payload
        if index is None:
            self._arrive(item, now)
            return
        prog: ProgramRun = item
        spec = prog.spec.calls[index]
        program = prog.record
        engine = self.engines[self._choose(prog, spec, now)]
        program.engine = str(engine.index)  # the program's affinity, as the process table's
        total = self._service(spec.prompt_tokens, spec.output_tokens)
        prog.future -= total
        request_id = f"{program.id}/{index}"
        call = Call(
            id=request_id,
            program_id=program.id,
            arrival=now,
            thread=str(index),
            parents=tuple([f"{program.id}/{p}" for p in spec.parents]) if spec.parents else (),
            prompt_tokens=spec.prompt_tokens,
            engine=str(engine.index),
            queued_since=now,
            oracle_remaining=total + (prog.future if self._program_oracle else 0.0),
        )
        program.active[call.id] = call
        program.calls += 1
        program.last_arrival = now
        rank = self.policy.on_arrival(call=call, program=program, now=now)
        for cache in self._caches:  # its cached contexts are awaited at the call's rank
            cache.arrive(program.id, rank.level, now)
        request = EngineRequest(
            id=request_id,
            prompt_tokens=spec.prompt_tokens,
            target_tokens=spec.output_tokens,
            max_tokens=spec.output_tokens,
            arrival=now,
        )
        tracked = engine.queue.track(request, call, program, rank)
        tracked.extra = CallRun(prog, spec, engine, total)
        engine.queue.now = now
        engine.model.add(request, now)
        self._kick(engine, now)

    def _choose(self, prog: ProgramRun, spec: CallSpec, now: float) -> int:
        """The balancer's engine for the call, from the engines' load and what each still
        caches of the context the call continues."""
        engines, program = self.engines, prog.record
        block = self.config.shape.block_size
        if len(engines) == 1:
            return 0
        cached = [0] * len(engines)
        if spec.prefix_of is not None:
            key = (program.id, spec.prefix_of)
            for i, e in enumerate(engines):
                if e.cache is not None:
                    cached[i] = e.cache.peek(key, spec.prefix_tokens, spec.prompt_tokens) // block
        route = Route(program.id, spec.prompt_tokens, program.engine, spec.prompt_tokens // block)
        decision = self.balancer.choose(call=route, engines=engine_loads(engines, cached), now=now)
        return decision.choice

    def _arrive(self, spec: ProgramSpec, now: float) -> None:
        future = sum(self._service(c.prompt_tokens, c.output_tokens) for c in spec.calls)
        prog = program_run(spec, now, future)
        if not spec.calls:
            return
        self._in_system += 1
        for c in spec.calls:
            if not c.parents:
                prog.tool_path[c.index] = c.think_s
                self._push(now + c.think_s, _RELEASE, (prog, c.index))

    # -- engine steps ----------------------------------------------------------------------

    def _step(self, engine: EngineSlot, now: float) -> None:
        queue, model = engine.queue, engine.model
        queue.now = now
        # Order matters only under contention: calls waiting, or a step's token budget used up
        # (then the running pass hands the budget out in order: best calls first).
        if now >= engine.next_rerank and (len(queue) or engine.full):
            engine.next_rerank = now + self.config.rerank_interval_s
            served = queue.rerank(self.policy, now, model.running, self._refresh)
            self._touch(served, now, ranked=engine)
            model.sort_running(queue.sort_key)
            for victim in queue.victims(model, self.config.preempt, now):
                self._preempt(engine, victim, now)
        step = None
        if self.config.decode_stretches:
            # Steps that only decode run as one stretch, up to the next event (which could
            # add or resume a call) or, with calls waiting, the next re-ranking (which could
            # preempt one) or anti-starvation deadline (which could change the head): the
            # same schedule at a cost per stretch, not per step.
            until = self._events[0][0] if self._events else math.inf
            if len(queue) or engine.full or model.num_running >= model.max_num_batched_tokens:
                until = min(until, engine.next_rerank, queue.next_due())
            step = model.decode_stretch(now, until)
        if step is None:
            step = model.step(now)
        prefill, decodes = step.num_prefill_tokens, step.num_decodes
        if not prefill and not decodes and not step.preempted:  # ``step.idle``, inlined
            engine.busy = False
            engine.full = False
            return
        engine.busy = True
        result = self._result
        if step.steps == 1:
            engine.full = prefill + decodes >= model.max_num_batched_tokens
            result.generated_tokens += len(step.emitted)
        else:  # a stretch: every step decoded the same requests, each a token
            engine.full = decodes // step.steps >= model.max_num_batched_tokens
            result.generated_tokens += decodes
        result.steps += step.steps
        result.prefill_tokens += prefill
        self._seq += 1  # ``_push``, inlined: once per step
        heapq.heappush(self._events, (step.end, _STEP_END, self._seq, (engine, step)))

    def _step_end(self, engine: EngineSlot, step: StepResult, now: float) -> None:
        if engine.cap is not None:
            engine.cap.stepped(step, now)
        for request in step.finished:
            self._finish(engine, request, now)
        if engine.cache is not None:
            engine.cache.settle(engine.model, now)
        self._step(engine, now)

    def _refresh(self, tracked: Tracked) -> bool:
        run: CallRun = tracked.extra  # type: ignore[assignment]
        call = tracked.call
        output = tracked.base_output + tracked.request.num_output
        service = self._service(run.spec.prompt_tokens, output)
        call.completion_tokens = output
        grew = service != call.service
        call.service = service
        future = run.prog.future if self._program_oracle else 0.0
        call.oracle_remaining = run.total - service + future
        return grew

    def _service(self, prompt_tokens: int, output_tokens: int) -> float:
        return self._cost.of(prompt_tokens=prompt_tokens, output_tokens=output_tokens)

    def _on_head(self, tracked: Tracked) -> None:
        run: CallRun = tracked.extra  # type: ignore[assignment]
        for c in self._caches:  # the call takes its context now, or it is gone
            c.served(run.prog.record.id)
        cache, spec, request = run.engine.cache, run.spec, tracked.request
        if cache is None or spec.prefix_of is None or request.num_computed or request.num_output:
            return
        hit = cache.hit(
            (run.prog.record.id, spec.prefix_of), spec.prefix_tokens, spec.prompt_tokens
        )
        if hit:
            # The engine model sizes a request's chunks from num_computed: starting it at the
            # cached length is exactly "these tokens are already in the KV cache".
            request.num_computed = hit
            run.cached = hit
            self._result.cached_tokens += hit

    def _preempt(self, engine: EngineSlot, tracked: Tracked, now: float) -> None:
        old = tracked.request
        run: CallRun = tracked.extra  # type: ignore[assignment]
        if run.first_token is None:
            run.first_token = old.first_token_time
        engine.model.abort(old.id, now)
        tracked.base_output += old.num_output
        request = resubmission(old, run, tracked.base_output)
        tracked.request = request
        tracked.preemptions += 1
        lifecycle.preempted(tracked.call, now)
        self._result.priority_preemptions += 1
        shape = self.config.shape
        kept = min(old.num_computed, request.prompt_tokens - 1)
        if shape.preemption == "swap" and self._swapped + kept <= shape.swap_space_tokens:
            # Out to host memory and back in: the call is ready again once both copies are
            # done, and then skips recomputing what it had (the copies do not slow the engine).
            request.num_computed = kept
            run.swapped = kept
            self._swapped += kept
            self._result.swapped_tokens += kept
            delay = 2 * kept * shape.kv_bytes_per_token / shape.swap_bandwidth
            self._push(now + delay, _RESUME, tracked)
        else:
            self._resume(tracked, now)

    def _resume(self, tracked: Tracked, now: float) -> None:
        run: CallRun = tracked.extra  # type: ignore[assignment]
        self._swapped -= run.swapped
        run.swapped = 0
        engine = run.engine
        engine.queue.now = now
        engine.model.add(tracked.request, now)
        self._kick(engine, now)

    def _kick(self, engine: EngineSlot, now: float) -> None:
        if not engine.busy and not engine.kicked:
            engine.kicked = True
            self._push(now, _KICK, engine)

    # -- finishing -------------------------------------------------------------------------

    def _touch(
        self, programs: Sequence[Program], now: float, *, ranked: EngineSlot | None = None
    ) -> None:
        """These programs' records changed (a call served or finished). Their waiting calls,
        siblings or, under a tenant floor, the tenant's, may wait on any engine: every
        engine's queue ranks them again (but ``ranked``'s, which did so already)."""
        for slot in self.engines:
            if slot is not ranked:
                for program in programs:
                    slot.queue.touch(program, now)

    def _finish(self, engine: EngineSlot, request: EngineRequest, now: float) -> None:
        tracked = engine.queue.forget(request.id)
        assert tracked is not None
        run: CallRun = tracked.extra  # type: ignore[assignment]
        prog, spec, call, program = run.prog, run.spec, tracked.call, tracked.program
        self._refresh(tracked)
        lifecycle.closed(call, now, ok=True)
        lifecycle.finished(self._on_finish, call, program, now)
        self._touch((program,), now)
        program.completion_tokens += spec.output_tokens
        program.prompt_tokens += spec.prompt_tokens
        first = run.first_token if run.first_token is not None else request.first_token_time
        self._result.calls.append(call_result(run, call, first, tracked.preemptions, now))
        if self.recorder is not None:
            self.recorder.record(
                call=call,
                program=program,
                now=now,
                first_token=first,
                cached_tokens=run.cached,
                preemptions=tracked.preemptions,
            )
        if engine.cache is not None:
            tokens, level = spec.prompt_tokens + spec.output_tokens, tracked.rank.level
            engine.cache.put(
                (program.id, spec.index), tokens, program=program.id, level=level, now=now
            )
        prog.tokens += spec.output_tokens
        for child in prog.children[spec.index]:
            prog.pending[child] -= 1
            if prog.pending[child] == 0:
                think = prog.spec.calls[child].think_s
                prog.tool_path[child] = prog.tool_path[spec.index] + think
                self._push(now + think, _RELEASE, (prog, child))
        prog.left -= 1
        if prog.left == 0:
            self._in_system -= 1
            self.balancer.forget(program=program.id)
            self._result.programs.append(program_result(prog, spec.index, now))


def simulate(
    programs: Sequence[ProgramSpec], policy: Policy, config: SimConfig | None = None
) -> SimResult:
    """Run ``programs`` under ``policy`` on a fresh simulator."""
    return Simulator(config or SimConfig(), policy).run(programs)
