"""HTTP routes of the proxy: the OpenAI API, pass-through of other /v1 routes, and operations."""

from __future__ import annotations

import functools
import time

import aiohttp
import orjson
from aiohttp import web

from proxy.auth import principal_of
from proxy.calls import CallContext, serve_call, upstream_headers
from proxy.drain import shutting_down
from proxy.errors import BadGateway, BadRequest, ModelNotFound, ServiceUnavailable
from proxy.faults import settle
from proxy.ids import valid_request_id
from proxy.intercept.askusage import ask_usage
from proxy.intercept.identify import strip_program
from proxy.intercept.scrub import strip_engine_fields
from proxy.intercept.tokens import prompt_tokens
from proxy.intercept.wire import (
    ChatCompletionRequest,
    CompletionRequest,
    parse_json_object,
    validate,
)
from proxy.kvhints.pool import EngineState
from proxy.middleware import REQUEST_ID, route_label
from proxy.passroute import engines_for, stored_object
from proxy.pathguard import checked_path
from proxy.relay import Outcome, engine_deadline, open_upstream, relay_stream, relay_whole
from proxy.security import PASSTHROUGH
from proxy.state import STATE, ProxyState
from proxy.wallclock import WALL_CLOCK


def request_id_of(request: web.Request, state: ProxyState) -> str:
    """The client-facing request id: the client's own X-Request-Id, or one made up. Engines
    never see it (``UpstreamIds``), so a client cannot name another's call at an engine."""
    given = request.headers.get("X-Request-Id")
    if given is None:
        rid = state.upstream_ids.next()
    elif valid_request_id(given):
        rid = given
    else:
        raise BadRequest(
            "header X-Request-Id must be 1 to 128 visible ASCII characters without spaces",
            param="X-Request-Id",
        )
    request[REQUEST_ID] = rid
    return rid


async def send_raw(
    request: web.Request,
    state: ProxyState,
    engines: list[EngineState],
    data: bytes | None,
    request_id: str,
    path: str,
    outcome: Outcome,
) -> tuple[aiohttp.ClientResponse, EngineState]:
    """Send a request unchanged to the first of ``engines`` (``proxy.passroute``); if it
    cannot be reached (nothing was sent), mark it unhealthy and try the next one. For an
    object stored on one engine, an engine's 404 sends it on to the next, too. ``outcome``
    gets the call's deadline at the engine that took it."""
    tried: list[str] = []
    seek = stored_object(path)
    for i, engine in enumerate(engines):
        headers = upstream_headers(request, state, engine, request_id)
        del headers["Content-Type"]
        if "Content-Type" in request.headers:
            headers["Content-Type"] = request.headers["Content-Type"]
        outcome.deadline = engine_deadline(engine)
        try:
            upstream = await open_upstream(
                state.client(), engine, request.method, path, data=data, headers=headers,
                connect=state.upstream_timeout, metrics=state.metrics,
                alarms=state.alarms, deadline=outcome.deadline,
            )  # fmt: skip
        except BadGateway as err:
            if err.code != "engine_unreachable":
                raise
            state.pool.mark_failed(engine, err.message)
            state.metrics.engine_healthy.labels(engine.name).set(0)
            tried.append(engine.name)
            continue
        if seek and upstream.status == 404 and i < len(engines) - 1:
            upstream.release()  # not stored there: ask the next engine
            continue
        return upstream, engine
    raise BadGateway(
        f"no engine serving this request could be reached (tried {', '.join(tried)})",
        code="engine_unreachable",
    )


async def generation(request: web.Request, *, chat: bool) -> web.StreamResponse:
    arrived = time.perf_counter()
    state = request.app[STATE]
    scheduler = state.scheduler
    request_id = request_id_of(request, state)
    raw = await request.read()
    body = parsed = parse_json_object(raw)
    principal = principal_of(request)
    # Identified first: messages it finds in a conversation seen before need no second check.
    identity = scheduler.identifier.identify(
        request.headers, body, raw, tenant=None if principal is None else principal.tenant
    )
    conversation = identity.conversation
    known = conversation.known if conversation is not None else 0
    wire = validate(
        ChatCompletionRequest if chat else CompletionRequest, body, known_messages=known
    )
    body = strip_program(body)
    if principal is None or not principal.engine_control:
        body = strip_engine_fields(body)
    # An unknown model fails here, before the call is recorded; the gate chooses the engine.
    state.pool.check(wire.model)
    drop_usage = False
    sent = raw if body is parsed else None  # the bytes of ``body``, if the proxy has them
    if wire.stream and not (wire.stream_options and wire.stream_options.include_usage):
        # The proxy needs usage for every call; it asks for it and hides the extra chunk.
        body, sent = ask_usage(body, sent)
        drop_usage = True
    program, call, priority = scheduler.arrive(
        identity, prompt_tokens=prompt_tokens(body, chat=chat, conversation=conversation)
    )
    headers = {
        "X-Request-Id": request_id,
        "X-Program-Id": program.id,
        "X-Call-Id": call.id,
        "X-Autellix-Priority": str(priority.level),
    }
    ctx = CallContext(
        request=request, state=state, route=route_label(request), chat=chat, stream=wire.stream,
        model=wire.model, body=body, identity=identity, program=program, call=call,
        request_id=state.upstream_ids.next(), headers=headers, drop_usage=drop_usage, arrived=arrived,
        raw=sent,
    )  # fmt: skip
    return await serve_call(ctx)


def _model_card(model: str, engines: list[str], created: int) -> dict[str, object]:
    # The models are served through this proxy: it owns the listing, since the proxy started.
    # Which engines serve each is an extra field (clients ignore fields they do not know).
    return {
        "id": model,
        "object": "model",
        "created": created,
        "owned_by": "autellix",
        "engines": sorted(engines),
    }


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    created = int(request.app[WALL_CLOCK].started)
    data = [
        _model_card(model, engines, created)
        for model, engines in sorted(state.pool.models().items())
    ]
    return web.json_response(
        {"object": "list", "data": data}, dumps=lambda o: orjson.dumps(o).decode()
    )


async def get_model(request: web.Request) -> web.Response:
    """OpenAI's ``GET /v1/models/{model}``, from the engines' lists (404 if none serves it)."""
    state = request.app[STATE]
    name = request.match_info["model"]
    engines = state.pool.models().get(name)
    if engines is None:
        raise ModelNotFound(f"model {name!r} does not exist")
    card = _model_card(name, engines, int(request.app[WALL_CLOCK].started))
    return web.json_response(card, dumps=lambda o: orjson.dumps(o).decode())


async def passthrough(request: web.Request) -> web.StreamResponse:
    """Any other allowlisted /v1 route (embeddings, responses, audio, ...), forwarded unchanged
    to an engine that serves the model the request names (or any engine if it names none),
    chosen as ``proxy.passroute`` says."""
    state = request.app[STATE]
    request_id = request_id_of(request, state)
    raw_path, _, query = request.raw_path.partition("?")
    path = checked_path(raw_path, request.app[PASSTHROUGH])
    if query:
        path += "?" + query
    raw = await request.read()
    model = request.query.get("model")
    if raw and request.content_type == "application/json":
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"request body is not valid JSON: {exc}") from exc
        if isinstance(parsed, dict) and isinstance(parsed.get("model"), str):
            model = parsed["model"]
    outcome = Outcome()
    engines = engines_for(request, state, model, path)
    upstream, engine = await send_raw(
        request, state, engines, raw or None, state.upstream_ids.next(), path, outcome
    )
    async with upstream:
        headers = {"X-Request-Id": request_id}
        if upstream.content_type == "text/event-stream":
            return await relay_stream(
                request, upstream, headers, outcome, drop_usage_chunk=False, engine=engine
            )
        response = await relay_whole(request, upstream, headers, outcome, engine=engine)
        settle(engine, outcome)
        return response


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    state = request.app[STATE]
    engines = {
        s.name: {"healthy": s.healthy, "models": sorted(s.models or ()), "error": s.last_error}
        for s in state.pool.engines.values()
    }
    if shutting_down(request.app) or not state.pool.any_healthy():
        err = (
            ServiceUnavailable("the proxy is shutting down", code="shutting_down")
            if shutting_down(request.app)
            else ServiceUnavailable("no engine is healthy", code="not_ready")
        )
        payload = err.to_dict()
        payload["engines"] = engines
        return web.json_response(payload, status=503)
    return web.json_response({"status": "ready", "engines": engines})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[STATE].metrics.render()
    return web.Response(
        body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


def add_routes(app: web.Application) -> None:
    # Partials rather than wrappers: a coroutine less in the chain each resumption goes through.
    app.router.add_post("/v1/chat/completions", functools.partial(generation, chat=True))
    app.router.add_post("/v1/completions", functools.partial(generation, chat=False))
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model:.+}", get_model)  # ids may hold slashes (org/name)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/metrics", metrics)
    app.router.add_route("*", "/v1/{tail:.*}", passthrough)
