"""What makes the proxy safe to expose, wired into an app in one place: client keys, the
tenant each request acts for, and the checks every request passes before a handler runs."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.admin import Viewer
from proxy.auth import KeyTable, auth_middleware, principal_of, warn_if_open
from proxy.config import ProxyConfig
from proxy.edge import body_decoder
from proxy.errors import BadRequest
from proxy.intercept.identify import Identifier
from proxy.pathguard import RouteAllowlist

KEYS = web.AppKey("autellix_keys", KeyTable)
PASSTHROUGH = web.AppKey("autellix_passthrough", RouteAllowlist)


@web.middleware
async def header_check(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp keeps header bytes that are not UTF-8 as lone surrogates; anything that later
    encodes such a value would fail deep inside. Refuse them here, naming the header."""
    for name, value in request.headers.items():
        if not value.isascii():
            try:
                value.encode()
            except UnicodeEncodeError:
                raise BadRequest(
                    f"header {name} is not valid UTF-8", param=name, code="invalid_header"
                ) from None
    return await handler(request)


def request_tenant(request: web.Request, identifier: Identifier) -> str:
    """The tenant a request acts for: its key's (a trusted tenant header may override it),
    or with no keys configured the open-mode tenant (hashed bearer token, or anonymous)."""
    principal = principal_of(request)
    known = None if principal is None else principal.tenant
    return identifier.tenants.tenant_of(request.headers, known)


def install(
    app: web.Application, config: ProxyConfig, identifier: Identifier, table: KeyTable
) -> Callable[[web.Request], Viewer]:
    """Add the security middlewares (after the error edge, so their refusals are shaped like
    every other error) and return who a request may see in the program routes."""
    app[KEYS] = table
    app[PASSTHROUGH] = RouteAllowlist(config.passthrough_routes)
    app.middlewares.append(header_check)
    if table:
        app.middlewares.append(auth_middleware(table))
    app.middlewares.append(body_decoder(config.max_body_bytes))
    warn_if_open(config, table)

    def viewer_of(request: web.Request) -> Viewer:
        # Open (no keys): nobody is authenticated, so nothing could be kept apart; every
        # client sees every program, and ids are looked up in its open-mode tenant first.
        principal = principal_of(request)
        return Viewer(
            request_tenant(request, identifier), admin=principal is None or principal.admin
        )

    return viewer_of
