"""The one error edge, and per-request metrics.

Every response passes here: domain errors (``ProxyError``) and aiohttp's own HTTP errors
(unknown route, wrong method, body too large) become OpenAI-shaped JSON; anything unexpected
is logged and answered 500 without taking the proxy down.
"""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.accesslog import request_done
from proxy.errors import NotFound, PayloadTooLarge, ProxyError
from proxy.metrics import Metrics

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


def _answer(err: ProxyError, request: web.Request, metrics: Metrics, route: str) -> web.Response:
    metrics.errors.labels(route, err.type).inc()
    return error_response(err, request)


def route_label(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    route = route_label(request)
    started = time.perf_counter()
    status = 500
    try:
        try:
            response = await handler(request)
        except ProxyError as exc:
            response = _answer(exc, request, metrics, route)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _answer(from_http_exception(exc, request), request, metrics, route)
        except (asyncio.CancelledError, ConnectionResetError):
            status = 499  # client closed the request (nginx's code): nobody to answer
            raise
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            internal = ProxyError("internal error in the proxy; see its log", code="internal_error")
            response = _answer(internal, request, metrics, route)
        status = response.status
        return response
    finally:
        metrics.requests.labels(route, str(status)).inc()
        metrics.latency.labels(route).observe(time.perf_counter() - started)
        request_done(request, status, started)
