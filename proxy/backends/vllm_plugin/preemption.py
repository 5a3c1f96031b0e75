"""Preemption for the policy: running calls outranked by waiting ones give their slot back
through vLLM's own preemption (KV freed, back to waiting, recomputed on resume), once they have
had their minimum quantum. The rule is the core's (``victims.py``); this applies it to vLLM's
running and waiting requests at the start of a step."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vllm.v1.request import RequestStatus  # type: ignore[import-not-found, unused-ignore]

from proxy.backends.vllm_plugin.control import PluginSettings
from proxy.backends.vllm_plugin.diagnostics import Diagnostics
from proxy.backends.vllm_plugin.inflight import last_step_in_flight, must_wait_for_output
from proxy.backends.vllm_plugin.queue import PolicyQueue, SortKey
from proxy.backends.vllm_plugin.victims import choose_victims

_UNTRACKED_LEVEL = 1 << 30  # a request the book does not know queues last, by arrival
_DONE: SortKey = (1 << 31, 0.0, "", 0)  # below every call: a slot about to free itself


class _Keys(dict[str, SortKey]):
    """Sort keys computed when first asked for: the victim walk reads few waiting calls."""

    def __init__(self, known: dict[str, SortKey], key: Callable[[str], SortKey]) -> None:
        super().__init__(known)
        self._key = key

    def __missing__(self, request_id: str) -> SortKey:
        value = self[request_id] = self._key(request_id)
        return value


class OutrankPreemption(Diagnostics):
    """A mix-in of ``AutellixScheduler``: the scheduler sets ``autellix_settings``,
    ``waiting`` and ``_passed_over``; vLLM's ``Scheduler`` provides the rest and
    ``_preempt_request``."""

    autellix_settings: PluginSettings
    waiting: PolicyQueue[Any]
    running: list[Any]
    requests: dict[str, Any]
    max_num_active_reqs: int
    num_waiting_for_streaming_input: int
    prev_step_scheduled_req_ids: set[str]
    _passed_over: set[str]
    _preempt_request: Callable[..., Any]

    def _queue_key(self, request: Any) -> SortKey:
        key = self.book.sort_key(request.request_id)
        return key if key is not None else (_UNTRACKED_LEVEL, request.arrival_time, "", 0)

    def _preempt_outranked(self, now: float) -> None:
        quantum = self.autellix_settings.min_quantum_tokens
        keys: dict[str, SortKey] = {}
        preemptible: set[str] = set()
        # Async: a call whose last token is in flight gives its slot to any waiting call (a
        # free slot in the synchronous scheduler) rather than a running call being preempted.
        keep_output = not getattr(self, "requires_kv_delivery", False)
        done = {r.request_id for r in self.running if keep_output and last_step_in_flight(r)}
        for request in self.running:
            keys[request.request_id] = (
                _DONE if request.request_id in done else self._queue_key(request)
            )
            served = self.book.served_since_admission(request.request_id, request.num_output_tokens)
            if request.status == RequestStatus.RUNNING and served is not None and served >= quantum:
                preemptible.add(request.request_id)
        preemptible |= done
        # Walked best first and only as far as the rule needs: no sort of the whole queue.
        # A call vLLM must skip this step (async: output still in flight from before its
        # preemption) claims no place, or its victim's slot would go to a worse call.
        waiting = (r for r in self.waiting.best_ids() if not must_wait_for_output(self.requests[r]))
        keys = _Keys(keys, lambda rid: self._queue_key(self.requests[rid]))
        limit: int = self.max_num_active_reqs
        streaming: int = self.num_waiting_for_streaming_input
        victims = choose_victims(
            waiting=waiting,
            running=[r.request_id for r in self.running],
            keys=keys,
            free_slots=limit - len(self.running) - streaming,
            passed_over=self._passed_over,
            preemptible=preemptible,
        )
        for victim_id, beneficiary in victims:
            request = self.requests[victim_id]
            held = self._blocks(victim_id)
            self.running.remove(request)
            self._preempt_request(
                request,
                time.monotonic(),
                drop_stale_output=getattr(self, "requires_kv_delivery", False),
            )
            # The victim may not be resumed in the same step; if it is, the runner must get
            # its whole token list again, as for vLLM's own forced preemption.
            self.prev_step_scheduled_req_ids.discard(victim_id)
            if victim_id in done:  # it finishes when its last token arrives, never resumes
                self._event("released", request, beneficiary=beneficiary, blocks_held=held)
                continue
            self.book.preempted(victim_id, now=now)
            self._event(
                "preempted",
                request,
                by="autellix",
                beneficiary=beneficiary,
                blocks_held=held,
                blocks_after=self._blocks(victim_id),
            )
