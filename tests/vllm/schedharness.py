"""vLLM's real scheduler classes driven in-process, with no model runner and no GPU.

vLLM's CPU platform forces synchronous scheduling, so a CPU server never runs
``AutellixAsyncScheduler``. Its logic needs no hardware, though: this builds the plug-in's
classes on vLLM's own ``VllmConfig`` and ``KVCacheConfig`` (a tiny model's config, a small block
pool) and plays the engine core's part, as vLLM's own scheduler tests do. Each step calls
``schedule()``, plays the model runner (one sampled token per request that is past its prompt,
the token's value being its position in the output, so a lost or repeated token shows) and
hands the output back with ``update_from_output()``:

- synchronously (``lag`` 0) like ``EngineCore.step``;
- one step late (``lag`` 1) like ``EngineCore.step_with_batch_queue`` under async scheduling,
  where step N+1 is scheduled, with output placeholders, before step N's output arrives.

Calls are tagged as the proxy tags them: the body comes from ``VLLMBackend.prepare_body``, and
its ``priority`` and ``vllm_xargs`` become the request's priority and
``sampling_params.extra_args``, as vLLM's API server passes them.
"""

from __future__ import annotations

import time
import warnings
from collections import defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

with warnings.catch_warnings():
    # torch and vLLM warn about their own deprecations on import; the suite makes warnings errors.
    warnings.simplefilter("ignore")
    import torch
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.sampling_params import SamplingParams
    from vllm.utils.hashing import sha256
    from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.outputs import ModelRunnerOutput
    from vllm.v1.request import Request, RequestStatus
    from vllm.v1.structured_output import StructuredOutputManager

    from proxy.backends.vllm_plugin.scheduler import AutellixAsyncScheduler, AutellixScheduler

from proxy.backends.base import CallHints
from proxy.backends.vllm import VLLMBackend
from proxy.config import EngineConfig
from proxy.policies.levels import Levels, LevelsConfig

BLOCK_SIZE = 16
MAX_MODEL_LEN = 512
PROMPT = list(range(20, 28))  # 8 prompt tokens, the same for every call (prefix-cache hits)
FIRST_TOKEN = 10  # a sampled token's value: FIRST_TOKEN + its index in the output

# The proxy's side: a vLLM engine marked as running the plug-in, default levels.
_BACKEND = VLLMBackend(
    EngineConfig(
        name="engine", url="http://127.0.0.1:9", kind="vllm", priority=True, scheduler_plugin=True
    )
)
_LEVELS = Levels.from_config(LevelsConfig())


@dataclass(frozen=True)
class Variant:
    """One way vLLM runs the plug-in."""

    name: str
    asynchronous: bool
    # Model runner V2 (GPU builds with Triton use it): resumed requests are sent as new ones.
    v2_runner: bool = False
    # Pipeline stages. Async scheduling with PP needs runner V2; the engine core then keeps
    # PP + 1 steps in flight, and a request decodes every PP steps.
    pipeline: int = 1

    @property
    def cls(self) -> type[Any]:
        return AutellixAsyncScheduler if self.asynchronous else AutellixScheduler

    @property
    def lag(self) -> int:
        """Steps scheduled before a step's output comes back."""
        return self.pipeline if self.asynchronous else 0


VARIANTS = (
    Variant("sync", asynchronous=False),
    Variant("async", asynchronous=True),
    Variant("async-runner-v2", asynchronous=True, v2_runner=True),
    Variant("async-pp2", asynchronous=True, v2_runner=True, pipeline=2),
)


def model_config(model_dir: Path) -> Any:
    """The tiny model's config (no weights are loaded, no tokenizer is needed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ModelConfig(
            model=str(model_dir),
            skip_tokenizer_init=True,
            max_model_len=MAX_MODEL_LEN,
            dtype="float32",
        )


def request_id(call: str) -> str:
    return f"cmpl-{call}-0"  # the form vLLM's completions endpoint gives its requests


def expected_tokens(n: int) -> list[int]:
    return [FIRST_TOKEN + i for i in range(n)]


@dataclass
class Harness:
    """One scheduler, the engine core's loop around it and what the clients received."""

    variant: Variant
    model: Any  # a vLLM ModelConfig
    slots: int = 2  # --max-num-seqs
    kv_blocks: int = 64
    sched: Any = field(init=False)
    tokens: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    finish_reasons: dict[str, str] = field(default_factory=dict)
    outputs: list[Any] = field(default_factory=list)  # every SchedulerOutput, in order
    # Requests preempted while a step of theirs was still in flight (async only).
    stale_preemptions: set[str] = field(default_factory=set)
    # The plug-in's preemptions and releases whose beneficiary vLLM did not schedule then.
    idle_preemptions: list[dict[str, Any]] = field(default_factory=list)
    _pending: deque[tuple[Any, dict[str, int]]] = field(default_factory=deque)
    _batch: set[str] = field(default_factory=set)  # the runner's persistent batch
    _prompts: dict[str, list[int]] = field(default_factory=dict)
    _closed: bool = False

    def __post_init__(self) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            config = VllmConfig(
                model_config=self.model,
                scheduler_config=SchedulerConfig(
                    max_num_seqs=self.slots,
                    max_num_batched_tokens=MAX_MODEL_LEN,
                    max_model_len=MAX_MODEL_LEN,
                    is_encoder_decoder=False,
                    policy="priority",
                ),
                cache_config=CacheConfig(block_size=BLOCK_SIZE),
            )
        # What a GPU build decides (the CPU platform forces synchronous scheduling), and the
        # block count that profiling would have found.
        config.scheduler_config.async_scheduling = self.variant.asynchronous
        config.cache_config.num_gpu_blocks = self.kv_blocks
        spec = FullAttentionSpec(
            block_size=BLOCK_SIZE, num_kv_heads=2, head_size=32, dtype=torch.float32
        )
        kv = KVCacheConfig(
            num_blocks=self.kv_blocks,
            kv_cache_tensors=[],
            kv_cache_groups=[KVCacheGroupSpec(["model.layers.0.self_attn"], spec)],
        )
        self.sched = self.variant.cls(
            vllm_config=config,
            kv_cache_config=kv,
            structured_output_manager=StructuredOutputManager(config),
            block_size=BLOCK_SIZE,
            log_stats=False,
        )
        self.sched.use_v2_model_runner = self.variant.v2_runner
        if self.variant.pipeline > 1:  # as AsyncScheduler sets them from parallel_config
            self.sched.pp_size = self.sched.decode_stagger = self.variant.pipeline
            self.sched.use_pp = True
        init_none_hash(sha256)
        self._hasher = get_request_block_hasher(BLOCK_SIZE, sha256)

    # -- the proxy's side -------------------------------------------------------------------

    def submit(
        self,
        call: str,
        *,
        service: float,
        max_tokens: int,
        program: str = "",
        session: bool = False,
    ) -> str:
        """A completion as the proxy sends it, for a program with ``service`` attained
        (``session``: a streaming-input session, which waits for more input after its turn)."""
        hints = CallHints(
            level=_LEVELS.level_of(service),
            program_id=program or f"p-{call}",
            call_id=call,
            thread="main",
            service=service,
        )
        rid = request_id(call)
        body = _BACKEND.prepare_body(
            {"model": "tiny", "prompt": "agent", "max_tokens": max_tokens, "ignore_eos": True},
            request_id=rid,
            hints=hints,
        )
        params = SamplingParams(
            max_tokens=max_tokens, ignore_eos=True, temperature=0.0, extra_args=body["vllm_xargs"]
        )
        self._prompts[rid] = list(PROMPT)
        request = Request(
            rid,
            list(PROMPT),
            params,
            None,
            arrival_time=time.time(),
            priority=body["priority"],
            block_hasher=self._hasher,
            resumable=session,
        )
        self.sched.add_request(request)
        return rid

    def abort(self, call: str) -> None:
        self.sched.finish_requests(request_id(call), RequestStatus.FINISHED_ABORTED)

    # -- the engine core's loop -------------------------------------------------------------

    def step(self) -> Any:
        """One scheduling step; outputs come back ``lag`` steps later."""
        running = {r.request_id: r.num_in_flight_tokens for r in self.sched.running}
        seen = len(self.sched.record.events)
        out = self.sched.schedule()
        self.outputs.append(out)
        for rid in out.preempted_req_ids:
            if running.get(rid, 0) > 0:
                self.stale_preemptions.add(rid)
        for event in list(self.sched.record.events)[seen:]:
            # The plug-in's preemptions and releases (vLLM's own preemptions have no beneficiary).
            beneficiary = event.get("beneficiary")
            if beneficiary is not None and beneficiary not in out.num_scheduled_tokens:
                self.idle_preemptions.append(event)
        self._check_runner_inputs(out)
        samples: dict[str, int] = {}
        for rid in out.num_scheduled_tokens:
            request = self.sched.requests[rid]
            if not request.is_prefill_chunk:  # the runner samples past the prompt only
                samples[rid] = FIRST_TOKEN + request.num_computed_tokens - request.num_prompt_tokens
        self._pending.append((out, samples))
        while len(self._pending) > self.variant.lag:
            self.deliver()
        self.check()
        return out

    def deliver(self) -> None:
        """The oldest step's model output, into ``update_from_output``."""
        out, samples = self._pending.popleft()
        ids = list(out.num_scheduled_tokens)
        result = ModelRunnerOutput(
            req_ids=ids,
            req_id_to_index={rid: i for i, rid in enumerate(ids)},
            sampled_token_ids=[[samples[rid]] if rid in samples else [] for rid in ids],
        )
        for core_outputs in self.sched.update_from_output(out, result).values():
            for o in core_outputs.outputs:
                self.tokens[o.request_id].extend(o.new_token_ids)
                if o.finish_reason is not None:
                    self.finish_reasons[o.request_id] = str(o.finish_reason)
        self.check()

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.step()

    def run_until_idle(self, limit: int = 1000) -> None:
        for _ in range(limit):
            if not self.sched.has_requests():
                break
            self.step()
        while self._pending:
            self.deliver()
        assert not self.sched.has_requests(), "calls left unfinished after the step limit"

    # -- checks -----------------------------------------------------------------------------

    def _check_runner_inputs(self, out: Any) -> None:
        """What a real runner needs to build its inputs is in the output: a request that was
        not in the previous batch (resumed, or skipped for a step) is rebuilt from its whole
        token list (model runner V1 looks it up in ``all_token_ids``; V2 gets it as new)."""
        for new in out.scheduled_new_reqs:
            if new.prefill_token_ids is not None:  # runner V2: resumed with all its tokens
                assert new.prefill_token_ids == self._prompts[new.req_id] + self.tokens[new.req_id]
        cached = out.scheduled_cached_reqs
        kept = self._batch & (set(out.num_scheduled_tokens) - set(cached.resumed_req_ids))
        self._batch = set(out.num_scheduled_tokens)
        if self.variant.v2_runner:  # it keeps every request's state, batch or not
            assert not cached.resumed_req_ids
            return
        for i, rid in enumerate(cached.req_ids):
            if rid in kept:
                continue
            if cached.num_output_tokens[i] > 0:
                assert rid in cached.all_token_ids, f"{rid}: rebuilt without its token list"
            if rid in cached.resumed_req_ids:
                assert cached.all_token_ids[rid] == self._prompts[rid] + self.tokens[rid]

    def check(self) -> None:
        """vLLM's bookkeeping and the plug-in's, after every call into the scheduler."""
        sched = self.sched
        assert len(sched.running) <= self.slots
        for rid, request in sched.requests.items():
            assert request.num_output_placeholders >= 0, rid
            assert request.num_stale_output_tokens >= 0, rid
            assert request.num_in_flight_tokens >= 0, rid
            if request.status != RequestStatus.RUNNING:
                assert request.num_output_placeholders == 0, rid
            if not self.variant.asynchronous:
                assert request.num_output_placeholders == 0, rid
        errors = [e for e in sched.record.events if e["event"] == "plugin_error"]
        assert not errors, f"the plug-in failed and carried on: {errors}"

    # -- the record -------------------------------------------------------------------------

    def events(self, *kinds: str) -> list[dict[str, Any]]:
        return [e for e in self.sched.record.events if not kinds or e["event"] in kinds]

    def decisions(self) -> list[tuple[object, ...]]:
        """Admissions and preemptions, in order, by call: what must not depend on timing."""
        call_of = {e["req"]: e["call"] for e in self.events("arrived")}
        return [
            (
                e["event"],
                e["call"],
                e.get("resumed"),
                e.get("by"),
                call_of.get(e.get("beneficiary")),
            )
            for e in self.events("scheduled", "preempted")
        ]

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.sched.shutdown()
