"""The simulated engine's HTTP face: vLLM's OpenAI server over an ``EngineModel`` in real time.

One engine-loop task per app (owned by ``cleanup_ctx``) steps the model: it takes ``now`` from
the app's clock, calls ``step``, sleeps the step's duration times ``time_scale``, then hands
each request's new token to its handler through an asyncio queue. With no work it waits on an
event that a new request sets. A handler that is cancelled (its client went away) aborts its
request in the model at once, freeing its KV. Request parsing and response shapes live in
``wire``; this module only moves requests and tokens between the network and the model.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.errors import BadRequest, ModelNotFound, ProxyError, ServiceUnavailable
from proxy.middleware import error_response, from_http_exception
from proxy.serve import background
from proxy.sim.engine.call import SimBatch
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.engine import RequestStatus
from proxy.sim.engine.metrics import metrics_handler
from proxy.sim.engine.respond import stream_end, stream_event, whole_body
from proxy.sim.engine.state import SIM, Event, SimClock, SimState, Stream
from proxy.sim.engine.wire import chat_batch, completion_batch

log = logging.getLogger("autellix.sim")

_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_ID_PREFIXES = ("chatcmpl-", "cmpl-")

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
            stream.events.put_nowait((stream.index, 1, reason))
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
            stream.events.put_nowait((stream.index, 0, "abort"))
        state.streams.clear()


async def _engine_ctx(app: web.Application) -> AsyncIterator[None]:
    state = app[SIM]
    state.clock.start()
    async with background(_engine_loop(state), "sim-engine-loop"):
        yield


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


async def _stream(
    request: web.Request, batch: SimBatch, events: asyncio.Queue[Event]
) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Request-Id": batch.request_id,
        }
    )
    await response.prepare(request)
    created = int(time.time())
    sent = [0] * len(batch.calls)
    running = len(batch.calls)
    try:
        while running:
            batched = [await events.get()]
            while not events.empty():
                batched.append(events.get_nowait())
            out = bytearray()
            for index, tokens, reason in batched:
                out += stream_event(batch.calls[index], created, sent[index], tokens, reason)
                sent[index] += tokens
                running -= reason is not None
            await response.write(bytes(out))
        await response.write(stream_end(batch, created, sent))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away mid-write: _generate aborts the request
    return response


async def _whole(batch: SimBatch, events: asyncio.Queue[Event]) -> web.Response:
    sent = [0] * len(batch.calls)
    reasons: list[str | None] = [None] * len(batch.calls)
    running = len(batch.calls)
    while running:
        index, tokens, reason = await events.get()
        sent[index] += tokens
        reasons[index] = reason
        running -= reason is not None
    finished = [r or "abort" for r in reasons]
    return web.Response(
        body=orjson.dumps(whole_body(batch, int(time.time()), sent, finished)),
        content_type="application/json",
        headers={"X-Request-Id": batch.request_id},
    )


def _admit(state: SimState, batch: SimBatch, events: asyncio.Queue[Event]) -> list[Stream]:
    """Add the batch's calls to the engine model, all or none."""
    streams: list[Stream] = []
    now = state.clock.now()
    try:
        for call in batch.calls:
            engine_request = call.engine_request(arrival=now)
            state.model.add(engine_request, engine_request.arrival)
            streams.append(Stream(engine_request, events, index=call.index, group=call.request_id))
    except ValueError as exc:
        for stream in streams:
            state.model.abort(stream.request.id, now)
        raise BadRequest(str(exc)) from exc
    for stream in streams:
        state.streams[stream.request.id] = stream
    return streams


async def _generate(request: web.Request, batch: SimBatch) -> web.StreamResponse:
    state = request.app[SIM]
    if state.failed is not None:
        raise ServiceUnavailable("the simulated engine has failed; see its log")
    if any(call.engine_id in state.streams for call in batch.calls):
        raise BadRequest(
            f"request id {batch.request_id!r} is already in flight", code="duplicate_request_id"
        )
    events: asyncio.Queue[Event] = asyncio.Queue()
    streams = _admit(state, batch, events)
    state.prompt_tokens += batch.prompt_tokens
    state.wake.set()
    try:
        return await (_stream(request, batch, events) if batch.stream else _whole(batch, events))
    finally:
        for stream in streams:
            if stream.ended:
                continue
            # The client went away (handler cancelled) before the end.
            engine_id = stream.request.id
            if state.streams.get(engine_id) is stream:
                del state.streams[engine_id]
            if state.model.get(engine_id) is stream.request:
                state.model.abort(engine_id, state.clock.now())
                state.aborted["disconnect"] += 1


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM]
    batch = chat_batch(state.config, await request.read(), _request_id(request, state))
    return await _generate(request, batch)


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[SIM]
    batch = completion_batch(state.config, await request.read(), _request_id(request, state))
    return await _generate(request, batch)


# -- control and introspection --------------------------------------------------------------


def _abort_one(state: SimState, given: str) -> str | None:
    candidates = [given]
    for prefix in _ID_PREFIXES:
        if given.startswith(prefix):
            bare = given[len(prefix) :]
            candidates += [bare, bare.removesuffix("-0")]  # vLLM's completions id: cmpl-<id>-0
    for request_id in candidates:
        # One choice by its engine id, or every choice of a request by the request's id.
        ids = [request_id] if request_id in state.streams else []
        ids = ids or [k for k, s in state.streams.items() if s.group == request_id]
        for engine_id in ids:
            stream = state.streams.pop(engine_id)
            state.model.abort(engine_id, state.clock.now())
            stream.ended = True
            stream.events.put_nowait((stream.index, 0, "abort"))
            state.aborted["abort_request"] += 1
        if ids:
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


def _model_card(config: SimEngineConfig, name: str, created: int) -> dict[str, object]:
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": config.model,
        "parent": None,
        "max_model_len": config.max_model_len,
    }


async def list_models(request: web.Request) -> web.Response:
    config = request.app[SIM].config
    created = int(time.time())
    data = [_model_card(config, name, created) for name in config.served_names()]
    return web.json_response({"object": "list", "data": data})


async def get_model(request: web.Request) -> web.Response:
    """OpenAI's ``GET /v1/models/{model}``: one model card, or 404 ``model_not_found``."""
    config = request.app[SIM].config
    name = request.match_info["model"]
    if name not in config.served_names():
        raise ModelNotFound(f"The model `{name}` does not exist.")
    return web.json_response(_model_card(config, name, int(time.time())))


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


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The sim engine's one error edge: OpenAI-shaped JSON, as vLLM answers.
    try:
        return await handler(request)
    except ProxyError as err:
        return error_response(err, request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(from_http_exception(exc, request), request)


def create_sim_app(config: SimEngineConfig) -> web.Application:
    """A simulated vLLM engine as an aiohttp app; serve it with ``proxy.serve.start_app``."""
    state = SimState(
        config=config,
        model=config.engine_model(),
        clock=SimClock(config.time_scale),
    )
    app = web.Application(middlewares=[_errors])
    app[SIM] = state
    app.cleanup_ctx.append(_engine_ctx)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/abort_requests", abort_requests)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)  # ids may hold slashes (org/name)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_handler(state))
    app.router.add_get("/sim/state", sim_state)
    return app
