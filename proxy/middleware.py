"""The one edge every request passes, as a single middleware.

In order: headers that are not UTF-8 are refused, the client's key is checked (when keys are
configured), a compressed body is inflated, and a draining proxy refuses new work; then the
handler runs. Whatever comes out of any of these becomes the answer here: domain errors
(``ProxyError``) and aiohttp's own HTTP errors (unknown route, wrong method, body too large)
as OpenAI-shaped JSON, anything unexpected logged and answered 500 without taking the proxy
down. The request is counted in the metrics and, for a call, written to the access log.

One middleware rather than one per concern: aiohttp wraps each middleware in a coroutine of
its own, on every request, and the steps are a few attribute reads each (DESIGN.md rule 13).
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.accesslog import request_done
from proxy.auth import OPEN_PATHS, PRINCIPAL, KeyTable, authenticate
from proxy.drain import Drain
from proxy.edge import check_headers, decode_body
from proxy.errors import (
    ClientClosedRequest,
    NotFound,
    PayloadTooLarge,
    ProxyError,
    ServiceUnavailable,
)
from proxy.metrics import Counter, Metrics

log = logging.getLogger("autellix.http")

METRICS = web.AppKey("autellix_metrics", Metrics)
REQUEST_ID = web.RequestKey("autellix_request_id", str)

_AIOHTTP_TYPES = {
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
}


def error_response(err: ProxyError, request: web.Request) -> web.Response:
    headers = {}
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        headers["X-Request-Id"] = request_id
    return web.Response(
        status=err.status,
        body=orjson.dumps(err.to_dict()),
        content_type="application/json",
        headers=headers,
    )


def from_http_exception(exc: web.HTTPException, request: web.Request) -> ProxyError:
    """aiohttp's own HTTP errors (unknown route, wrong method, body too large) as domain errors."""
    if exc.status == 404:
        return NotFound(f"no route {request.method} {request.path}", code="route_not_found")
    if exc.status == 413:
        return PayloadTooLarge(
            f"request body too large: {exc.text or ''}".strip(), code="body_too_large"
        )
    err = ProxyError(exc.reason or exc.text or "error")
    err.status = exc.status
    err.type = _AIOHTTP_TYPES.get(
        exc.status, "invalid_request_error" if exc.status < 500 else "internal_error"
    )
    return err


_CLIENT_GONE = ClientClosedRequest(
    "the client closed the connection before its answer was written", code="client_closed"
)


def route_label(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


def edge_middleware(metrics: Metrics, keys: KeyTable, drain: Drain, body_limit: int) -> Any:
    """The app's only middleware. ``keys`` empty: the proxy runs open (no key checked);
    ``body_limit``: the most bytes a request body may inflate to."""
    requests, errors, latency = metrics.requests, metrics.errors, metrics.latency

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        started = perf_counter()
        status = 500
        try:
            try:
                check_headers(request.headers)
                guarded = request.path not in OPEN_PATHS  # probes and scrapers pass freely
                if keys and guarded:
                    request[PRINCIPAL] = authenticate(keys, request.headers)
                if "Content-Encoding" in request.headers:
                    await decode_body(request, body_limit)
                if not guarded:
                    response = await handler(request)
                elif drain.draining:
                    # A request on a connection opened before the drain (the listener is
                    # closed already).
                    raise ServiceUnavailable("the proxy is shutting down", code="shutting_down")
                else:
                    drain.enter()
                    try:
                        response = await handler(request)
                    finally:
                        drain.leave()
            except ProxyError as exc:
                response = _answer(exc, request, errors, route)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = _answer(from_http_exception(exc, request), request, errors, route)
            except asyncio.CancelledError:
                status = 499  # client closed the request (nginx's code): nobody to answer
                raise
            except ConnectionResetError:
                # A write found the client's connection closing before its handler was
                # cancelled. Nobody reads this answer, and aiohttp drops it quietly; raised on,
                # the error would be logged as a failure of the handler (and answered 500).
                response = error_response(_CLIENT_GONE, request)
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.path)
                internal = ProxyError(
                    "internal error in the proxy; see its log", code="internal_error"
                )
                response = _answer(internal, request, errors, route)
            status = response.status
            return response
        finally:
            requests.labels(route, str(status)).inc()
            latency.labels(route).observe(perf_counter() - started)
            request_done(request, status, started)

    return edge


def _answer(err: ProxyError, request: web.Request, errors: Counter, route: str) -> web.Response:
    errors.labels(route, err.type).inc()
    return error_response(err, request)
