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

from proxy.errors import BadRequest, ProxyError, ServiceUnavailable
from proxy.middleware import error_response, from_http_exception
from proxy.serve import background
from proxy.sim.engine.call import SimCall
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.engine import RequestStatus
from proxy.sim.engine.metrics import metrics_handler
from proxy.sim.engine.state import SIM, SimClock, SimState, Stream
from proxy.sim.engine.wire import chat_call, completion_call, stream_end, stream_event, whole_body

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
    try:
        while reason is None:
            events = [await stream.events.get()]
            while not stream.events.empty():
                events.append(stream.events.get_nowait())
            out = bytearray()
            for tokens, reason in events:
                out += stream_event(call, created, sent, tokens, reason)
                sent += tokens
            await response.write(bytes(out))
        await response.write(stream_end(call, created, sent))
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went away mid-write: _generate aborts the request
    return response


async def _whole(call: SimCall, stream: Stream) -> web.Response:
    sent = 0
    reason: str | None = None
    while reason is None:
        tokens, reason = await stream.events.get()
        sent += tokens
    return web.Response(
        body=orjson.dumps(whole_body(call, int(time.time()), sent, reason)),
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
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics_handler(state))
    app.router.add_get("/sim/state", sim_state)
    return app
