"""Autellix inside vLLM's engine: a subclass of the V1 scheduler (pinned: vllm 0.32.0).

Start the engine with ``--scheduler-cls proxy.backends.vllm_plugin.scheduler.AutellixScheduler``
and ``--scheduling-policy priority`` (see docs/vllm.md). Stock vLLM orders its waiting queue by
the priority a request was submitted with and preempts only when KV blocks run out. Here, at
the start of every ``schedule()``:

1. the control channel is drained (live program service and call levels from the proxy);
2. every call is re-ranked by the policy from its tokens so far (demotion as it is served);
3. the waiting queue is re-sorted by that rank (it is a ``PolicyQueue``, not vLLM's heap);
4. running calls outranked by waiting ones are preempted with vLLM's own mechanism (KV freed,
   back to waiting, recomputed on resume), once they have had their minimum quantum;

then vLLM's own ``schedule()`` runs unchanged on the reordered queues. ``request.priority`` is
set to the call's level, so vLLM's own KV-pressure victim choice follows the policy too.

vLLM internals relied on (they move between versions, hence the pin) are listed in
docs/vllm.md ("Internals relied on"); KV retention's own are checked in ``retention.py``, which
turns itself off without them.
"""

from __future__ import annotations

import os
import time
from typing import Any

from vllm.v1.core.sched.async_scheduler import (  # type: ignore[import-not-found, unused-ignore]
    AsyncScheduler,
)
from vllm.v1.core.sched.request_queue import (  # type: ignore[import-not-found, unused-ignore]
    SchedulingPolicy,
)
from vllm.v1.core.sched.scheduler import (  # type: ignore[import-not-found, unused-ignore]
    Scheduler,
)
from vllm.v1.request import RequestStatus  # type: ignore[import-not-found, unused-ignore]

from proxy.backends.vllm_plugin.cap import RunningCap, cap_from_env
from proxy.backends.vllm_plugin.control import (
    CallLevel,
    ControlReceiver,
    EventRecord,
    PluginSettings,
    ProgramService,
    make_policy,
    parse_tags,
)
from proxy.backends.vllm_plugin.diagnostics import logger
from proxy.backends.vllm_plugin.preemption import OutrankPreemption
from proxy.backends.vllm_plugin.queue import (
    CallBook,
    PolicyQueue,
)
from proxy.backends.vllm_plugin.retention import KVRetention, retention_from_env, step_blocks
from proxy.core.concurrency import for_policy
from proxy.policies.levels import Levels

_OK = frozenset({"FINISHED_STOPPED", "FINISHED_LENGTH_CAPPED"})


class AutellixScheduler(OutrankPreemption, Scheduler):  # type: ignore[misc, unused-ignore]
    """vLLM's synchronous scheduler (the one vLLM forces on CPU) with Autellix ordering,
    demotion and preemption. ``AutellixAsyncScheduler`` below is the GPU variant."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = self.autellix_settings = PluginSettings.from_env(os.environ)
        policy = make_policy(settings.policy, settings.levels)
        self.book = CallBook(
            policy=policy, levels=Levels.from_config(settings.levels), cost=settings.cost
        )
        if str(self.scheduler_config.policy) != "priority":
            logger.warning(
                "Autellix: start vLLM with --scheduling-policy priority; under fcfs the API "
                "server refuses the priority the proxy sends"
            )
        # vLLM's KV-pressure preemption picks its victim by request.priority only under the
        # priority policy; the book keeps request.priority equal to the call's level.
        self.policy = SchedulingPolicy.PRIORITY
        self.waiting: PolicyQueue[Any] = PolicyQueue(self.book)
        self.record = EventRecord(settings.log_path, maxlen=settings.log_max)
        self.control = ControlReceiver(settings.control_addr) if settings.control_addr else None
        self._passed_over: set[str] = set()
        self._warned: set[str] = set()
        # Program-aware KV retention (retention.py); off unless AUTELLIX_PLUGIN_KV_* ask.
        retention = retention_from_env(os.environ)
        self.retention = KVRetention(retention, self.kv_cache_manager, event=self._event)
        config = self.scheduler_config  # vLLM's admission limit: the cap stays under it
        own: int = getattr(config, "max_num_active_seqs", None) or config.max_num_seqs
        cap = for_policy(cap_from_env(), policy, retains=retention.evict == "rank")
        self.cap = RunningCap(cap, limit=own, now=time.time())
        logger.info(
            "Autellix scheduler: policy=%s levels=%s cost=%s min_quantum_tokens=%d preempt=%s "
            "control=%s cap=%s kv=%s",
            *(policy.name, settings.levels, settings.cost, settings.min_quantum_tokens),
            *(settings.preempt, settings.control_addr, cap, retention),
        )

    # -- vLLM hooks -------------------------------------------------------------------------

    def add_request(self, request: Any) -> None:
        if request.request_id not in self.requests:  # not a streaming-input continuation
            try:
                self._arrive(request)
            except Exception:
                self._guard("add_request")
        super().add_request(request)

    def _arrive(self, request: Any) -> None:
        params = getattr(request, "sampling_params", None)
        extra = getattr(params, "extra_args", None)
        tags, problems = parse_tags(extra, request.request_id)
        for problem in problems:
            self._warn_once(
                problem,
                "bad vllm_xargs (%s) in request %s; using defaults",
                problem,
                request.request_id,
            )
        if extra is None:
            self._warn_once(
                "untagged",
                "request %s has no vllm_xargs: ranked as a program of its own",
                request.request_id,
            )
        now = time.time()
        tracked = self.book.arrive(
            request_id=request.request_id,
            tags=tags,
            prompt_tokens=request.num_prompt_tokens,
            arrival=request.arrival_time,
            now=now,
        )
        self._event("arrived", request, vllm_priority=request.priority, problems=problems)
        request.priority = tracked.rank.level
        self.retention.arrived(tracked.program.id, tracked.rank.level, now)

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        now = time.time()
        try:
            self._before_step(now)
        except Exception:
            self._guard("schedule (before vLLM's step)")
        before = [r.request_id for r in self.running]
        output = super().schedule(*args, **kwargs)
        try:
            self._after_step(before, now, output)
        except Exception:
            self._guard("schedule (after vLLM's step)")
        self.record.flush()
        return output

    def _before_step(self, now: float) -> None:
        self.waiting.now = now
        self.retention.before_step(now, running=len(self.running), budget_blocks=step_blocks(self))
        # vLLM admits while fewer than max_num_active_reqs run: the cap (cap.py) sets it.
        self.max_num_active_reqs = self.cap.before_step(now, waiting=len(self.waiting))
        if self.control is not None:
            self._apply_control(now)
        # Running calls report their tokens; waiting ones are re-ranked by the core when their
        # rank can change (a deadline, a sibling served or finished, a message from the proxy).
        for request in self.running:
            tracked = self.book.get(request.request_id)
            if tracked is None:
                continue
            old = tracked.rank.level
            rank = self.book.refresh(
                request.request_id,
                prompt_tokens=request.num_prompt_tokens,
                output_tokens=request.num_output_tokens,
                now=now,
            )
            if rank is not None and rank.level != old:
                self._event("level", request, was=old)
            request.priority = tracked.rank.level
        paused = getattr(self.pause_state, "name", "UNPAUSED") != "UNPAUSED"
        if self.autellix_settings.preempt and self.waiting and not paused:
            self._preempt_outranked(now)

    def _apply_control(self, now: float) -> None:
        assert self.control is not None
        messages, errors = self.control.poll()
        for error in errors:
            self._warn_once("control:" + error, "control message rejected: %s", error)
            self._event("control_rejected", reason=error)
        for message in messages:
            if isinstance(message, ProgramService):
                touched = self.book.set_program_service(message.program, message.service, now=now)
                self._event(
                    "control", program=message.program, service=message.service, reqs=touched
                )
            elif isinstance(message, CallLevel):
                touched = self.book.set_call_level(message.call, message.level, now=now)
                self._event("control", call=message.call, set_level=message.level, reqs=touched)

    def _after_step(self, before: list[str], now: float, output: Any = None) -> None:
        self.cap.after_step(getattr(output, "num_scheduled_tokens", None) or {})
        still = {r.request_id for r in self.running}
        for request_id in before:
            request = self.requests.get(request_id)
            if request is None or request_id in still:
                continue
            if request.status == RequestStatus.PREEMPTED:  # vLLM's own, for KV
                self.book.preempted(request_id, now=now)
                self._event("preempted", request, by="vllm")
        was = set(before)
        for request in self.running:
            if request.request_id not in was:
                tracked = self.book.get(request.request_id)
                resumed = tracked is not None and tracked.call.started_at is not None
                self.book.admitted(
                    request.request_id, output_tokens=request.num_output_tokens, now=now
                )
                stats = getattr(request, "prefill_stats", None)  # vLLM's prefix-cache hit
                self._event(
                    "scheduled",
                    request,
                    resumed=resumed,
                    waiting=len(self.waiting),
                    running=len(self.running),
                    cached=getattr(stats, "num_local_cached_tokens", None),
                    cap=self.max_num_active_reqs,
                )
                if tracked is not None and not resumed:
                    self.retention.admitted(tracked.program.id, request.request_id)
        self._passed_over = self.waiting.ids()

    def _free_request(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        held = self._blocks(request.request_id)
        self.retention.freeing(request, self.book.get(request.request_id), time.time())
        result = super()._free_request(request, *args, **kwargs)
        status = getattr(request.status, "name", str(request.status))
        try:
            now = time.time()
            self.book.refresh(
                request.request_id,
                prompt_tokens=request.num_prompt_tokens,
                output_tokens=request.num_output_tokens,
                now=now,
            )
            self._event(
                "finished",
                request,
                status=status,
                blocks_held=held,
                blocks_after=self._blocks(request.request_id),
                kv_usage=round(self.kv_cache_manager.usage, 6),
            )
            self.book.finish(request.request_id, now=now, ok=status in _OK)
        except Exception:
            self._guard("finish")
        return result

    def finish_requests(self, *args: Any, **kwargs: Any) -> Any:
        # Aborts arrive between steps; an idle engine may not step again soon, so flush now.
        result = super().finish_requests(*args, **kwargs)
        self.record.flush()
        return result

    def update_from_output(self, *args: Any, **kwargs: Any) -> Any:
        result = super().update_from_output(*args, **kwargs)
        self.record.flush()
        return result

    def shutdown(self) -> None:
        try:
            super().shutdown()
        finally:
            if self.control is not None:
                self.control.close()
            self.record.close()


class AutellixAsyncScheduler(AutellixScheduler, AsyncScheduler):  # type: ignore[misc, unused-ignore]
    """The same on vLLM's async scheduler, which GPU builds use by default (the MRO puts
    ``AsyncScheduler`` between this class's logic and ``Scheduler``). Tested in-process on
    vLLM's real classes with outputs one step late (tests/vllm/test_async_scheduler.py); not
    yet run in an engine with a GPU model runner (docs/vllm.md, "Limits")."""
