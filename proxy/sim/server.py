"""The simulated engine's HTTP face: vLLM's OpenAI server over an ``EngineModel`` in real time.

One engine-loop task per app (owned by ``cleanup_ctx``) steps the model: it takes ``now`` from
the app's clock, calls ``step``, sleeps the step's duration times ``time_scale``, then hands
each request's new token to its handler through an asyncio queue. With no work it waits on an
event that a new request sets. A handler that is cancelled (its client went away) aborts its
request in the model at once, freeing its KV.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.errors import BadRequest, NotFound, ProxyError, ServiceUnavailable
from proxy.sim.config import SimEngineConfig
from proxy.sim.engine import EngineModel, EngineRequest, RequestStatus
from proxy.sim.text import SimCall, chat_call, completion_call

log = logging.getLogger("autellix.sim")

_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_ID_PREFIXES = ("chatcmpl-", "cmpl-")
_DONE = b"data: [DONE]\n\n"

Event = tuple[int, str | None]
"""What a handler receives per step: (new tokens, finish reason or None)."""


class SimClock:
    """Simulated seconds since the engine started: real elapsed time / ``time_scale``."""

    def __init__(self, time_scale: float, real: Callable[[], float] = time.perf_counter) -> None:
        self.time_scale = time_scale
        self._real = real
        self._origin = real()

    def start(self) -> None:
        self._origin = self._real()

    def now(self) -> float:
        return (self._real() - self._origin) / self.time_scale

    def real_delay(self, sim_time: float) -> float:
        """Real seconds from now until the clock reads ``sim_time`` (0 if already past)."""
        return max(0.0, self._origin + sim_time * self.time_scale - self._real())


@dataclass(slots=True, eq=False)
class Stream:
    request: EngineRequest
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    ended: bool = False  # the final event was queued; the model no longer holds the request


@dataclass(slots=True)
class SimState:
    """One simulated engine: its model, clock, open streams and counters."""

    config: SimEngineConfig
    model: EngineModel
    clock: SimClock
    streams: dict[str, Stream] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    id_prefix: str = field(default_factory=lambda: secrets.token_hex(3))
    busy_until: float = 0.0
    failed: BaseException | None = None
    finished: Counter[str] = field(default_factory=Counter)
    aborted: Counter[str] = field(default_factory=Counter)  # by cause
    prompt_tokens: int = 0
    generation_tokens: int = 0

    @property
    def label(self) -> str:
        return self.config.served_names()[0]

    def next_id(self) -> str:
        return f"{self.id_prefix}{next(self.ids):x}"


SIM = web.AppKey("sim_state", SimState)


# -- the engine loop ---------------------------------------------------------------------


async def _run_engine(state: SimState) -> None:
    model = state.model
    while True:
        if not model.has_work:
            state.wake.clear()
            await state.wake.wait()
            continue
        now = max(state.clock.now(), state.busy_until)
        result = model.step(now)
        if result.idle:  # nothing can run until something changes
            state.wake.clear()
            await state.wake.wait()
            continue
        state.busy_until = result.end
        await asyncio.sleep(state.clock.real_delay(result.end))
        state.generation_tokens += len(result.emitted)
        for request in result.emitted:
            stream = state.streams.get(request.id)
            if stream is None or stream.request is not request:
                continue  # aborted while the step ran
            reason = request.finish_reason if request.status is RequestStatus.FINISHED else None
            stream.events.put_nowait((1, reason))
            if reason is not None:
                stream.ended = True
                del state.streams[request.id]
        state.finished.update(request.limit_reason for request in result.finished)


async def _engine_loop(state: SimState) -> None:
    try:
        await _run_engine(state)
    except Exception as exc:  # a bug in the model: end every stream rather than hang them
        log.exception("simulated engine loop failed")
        state.failed = exc
        for stream in state.streams.values():
            stream.ended = True
            stream.events.put_nowait((0, "abort"))
        state.streams.clear()


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[SIM]
    state.clock.start()
    task = asyncio.create_task(_engine_loop(state), name="sim-engine-loop")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# -- generation ----------------------------------------------------------------------------


def _request_id(request: web.Request, state: SimState) -> str:
    given = request.headers.get("X-Request-Id")
    if given is None:
        return state.next_id()
    if not _REQUEST_ID.match(given):
        raise BadRequest(
            "X-Request-Id must be 1-128 visible ASCII characters", param="X-Request-Id"
        )
    return given


def _usage(call: SimCall, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": call.prompt_tokens + completion,
    }


def _chunk(call: SimCall, created: int, choices: list[Any], usage: Any = None) -> bytes:
    body: dict[str, Any] = {
        "id": call.response_id,
        "object": "chat.completion.chunk" if call.chat else "text_completion",
        "created": created,
        "model": call.model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return b"data: " + orjson.dumps(body) + b"\n\n"


def _choice(call: SimCall, text: str, reason: str | None, *, role: bool = False) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0}
    if call.chat:
        choice["delta"] = {"role": "assistant", "content": text} if role else {"content": text}
    else:
        choice["text"] = text
    choice["logprobs"] = None
    choice["finish_reason"] = reason
    if reason is not None:
        choice["stop_reason"] = None
    return choice


async def _stream(request: web.Request, call: SimCall, stream: Stream) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Request-Id": call.request_id,
        }
    )
    await response.prepare(request)
    created = int(time.time())
    sent = 0
    reason: str | None = None
    while reason is None:
        events = [await stream.events.get()]
        while not stream.events.empty():
            events.append(stream.events.get_nowait())
        out = bytearray()
        for tokens, reason in events:
            if call.chat and sent == 0 and (tokens or reason):
                out += _chunk(call, created, [_choice(call, "", None, role=True)])
            text = call.token_text(sent) if tokens else ""
            sent += tokens
            usage = _usage(call, sent) if call.continuous_usage else None
            if tokens or reason:
                out += _chunk(call, created, [_choice(call, text, reason)], usage)
        await response.write(bytes(out))
    tail = _chunk(call, created, [], _usage(call, sent)) if call.include_usage else b""
    await response.write(tail + _DONE)
    await response.write_eof()
    return response


async def _whole(call: SimCall, stream: Stream) -> web.Response:
    sent = 0
    reason: str | None = None
    while reason is None:
        tokens, reason = await stream.events.get()
        sent += tokens
    text = call.answer_text(sent)
    choice: dict[str, Any] = {"index": 0}
    if call.chat:
        choice["message"] = {"role": "assistant", "content": text, "tool_calls": []}
    else:
        choice["text"] = text
    choice.update(logprobs=None, finish_reason=reason, stop_reason=None)
    body = {
        "id": call.response_id,
        "object": "chat.completion" if call.chat else "text_completion",
        "created": int(time.time()),
        "model": call.model,
        "choices": [choice],
        "usage": _usage(call, sent),
    }
    return web.Response(
        body=orjson.dumps(body),
        content_type="application/json",
        headers={"X-Request-Id": call.request_id},
    )


async def _generate(request: web.Request, call: SimCall) -> web.StreamResponse:
    state = request.app[SIM]
    if state.failed is not None:
        raise ServiceUnavailable("the simulated engine has failed; see its log")
    if call.request_id in state.streams:
        raise BadRequest(
            f"request id {call.request_id!r} is already in flight", code="duplicate_request_id"
        )
    engine_request = call.engine_request(arrival=state.clock.now())
    try:
        state.model.add(engine_request, engine_request.arrival)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    stream = Stream(engine_request)
    state.streams[call.request_id] = stream
    state.prompt_tokens += call.prompt_tokens
    state.wake.set()
    try:
        return await (_stream(request, call, stream) if call.stream else _whole(call, stream))
    finally:
        if not stream.ended:  # the client went away (handler cancelled) before the end
            if state.streams.get(call.request_id) is stream:
                del state.streams[call.request_id]
            if state.model.get(call.request_id) is engine_request:
                state.model.abort(call.request_id, state.clock.now())
                state.aborted["disconnect"] += 1


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM]
    call = chat_call(state.config, await request.read(), _request_id(request, state))
    return await _generate(request, call)


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM]
    call = completion_call(state.config, await request.read(), _request_id(request, state))
    return await _generate(request, call)


# -- control and introspection --------------------------------------------------------------


def _abort_one(state: SimState, given: str) -> str | None:
    candidates = [given]
    for prefix in _ID_PREFIXES:
        if given.startswith(prefix):
            bare = given[len(prefix) :]
            candidates += [bare, bare.removesuffix("-0")]  # vLLM's completions id: cmpl-<id>-0
    for request_id in candidates:
        stream = state.streams.pop(request_id, None)
        if stream is None:
            continue
        state.model.abort(request_id, state.clock.now())
        stream.ended = True
        stream.events.put_nowait((0, "abort"))
        state.aborted["abort_request"] += 1
        return request_id
    return None


async def abort_requests(request: web.Request) -> web.Response:
    """vLLM's dev-mode ``POST /abort_requests {"request_ids": [...]}``; unknown ids are ignored."""
    state = request.app[SIM]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from exc
    ids = body.get("request_ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise BadRequest("request_ids must be a list of strings", param="request_ids")
    aborted = [found for i in ids if (found := _abort_one(state, i)) is not None]
    return web.json_response({"aborted": aborted}, dumps=lambda v: orjson.dumps(v).decode())


async def list_models(request: web.Request) -> web.Response:
    config = request.app[SIM].config
    created = int(time.time())
    data = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": config.model,
            "parent": None,
            "max_model_len": config.max_model_len,
        }
        for name in config.served_names()
    ]
    return web.json_response({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    if request.app[SIM].failed is not None:
        raise ServiceUnavailable("the simulated engine has failed; see its log")
    return web.Response()


async def sim_state(request: web.Request) -> web.Response:
    state = request.app[SIM]
    model = state.model
    return web.json_response(
        {
            "running": [r.id for r in model.running],
            "waiting": [r.id for r in model.waiting],
            "kv_usage": model.kv_usage,
            "preemptions": model.num_preemptions,
            "aborted": sum(state.aborted.values()),
        }
    )


class _SimCollector(Collector):
    """vLLM's metric names, read from the model at scrape time."""

    def __init__(self, state: SimState) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        state, model, label = self._state, self._state.model, [self._state.label]
        for name, doc, value in (
            ("vllm:num_requests_running", "Requests in the running batch.", model.num_running),
            ("vllm:num_requests_waiting", "Requests waiting to be scheduled.", model.num_waiting),
            ("vllm:kv_cache_usage_perc", "Fraction of KV blocks in use (0..1).", model.kv_usage),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["model_name"])
            gauge.add_metric(label, value)
            yield gauge
        for name, doc, total in (
            ("vllm:num_preemptions", "Preemptions (by recompute).", model.num_preemptions),
            ("vllm:prompt_tokens", "Prompt tokens of accepted requests.", state.prompt_tokens),
            ("vllm:generation_tokens", "Tokens generated.", state.generation_tokens),
        ):
            counter = CounterMetricFamily(name, doc, labels=["model_name"])
            counter.add_metric(label, total)
            yield counter
        yield _by_reason(
            "vllm:request_success", "Requests that finished, by reason.", label[0],
            "finished_reason", state.finished, ("stop", "length"),
        )  # fmt: skip
        yield _by_reason(
            "sim:num_aborted_requests",
            "Requests aborted before the end: client disconnect or POST /abort_requests.",
            label[0], "cause", state.aborted, ("disconnect", "abort_request"),
        )  # fmt: skip


def _by_reason(
    name: str, doc: str, model: str, key: str, counts: Counter[str], reasons: tuple[str, ...]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["model_name", key])
    for reason in reasons:  # every reason listed, zeros included, so the series always exist
        family.add_metric([model, reason], counts[reason])
    return family


def _metrics_handler(registry: CollectorRegistry) -> Handler:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    return metrics


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The sim engine's one error edge: OpenAI-shaped JSON, as vLLM answers.
    try:
        return await handler(request)
    except ProxyError as err:
        return web.Response(
            status=err.status, body=orjson.dumps(err.to_dict()), content_type="application/json"
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error: ProxyError = (
            NotFound(f"no route {request.method} {request.path}")
            if exc.status == 404
            else BadRequest(exc.reason)
        )
        error.status = exc.status
        return web.Response(
            status=exc.status, body=orjson.dumps(error.to_dict()), content_type="application/json"
        )


def create_sim_app(config: SimEngineConfig) -> web.Application:
    """A simulated vLLM engine as an aiohttp app; serve it with ``proxy.serve.start_app``."""
    state = SimState(
        config=config,
        model=config.engine_model(),
        clock=SimClock(config.time_scale),
    )
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_SimCollector(state))
    app = web.Application(middlewares=[_errors])
    app[SIM] = state
    app.cleanup_ctx.append(_engine_ctx)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/abort_requests", abort_requests)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", _metrics_handler(registry))
    app.router.add_get("/sim/state", sim_state)
    return app
