"""What makes the proxy safe to expose, wired into an app in one place: client keys, the
tenant each request acts for, and the pass-through's allowlist. (The checks every request
passes before a handler runs are the edge's, ``proxy.middleware``.)"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from proxy.admin import Viewer
from proxy.auth import KeyTable, principal_of, warn_if_open
from proxy.config import ProxyConfig
from proxy.intercept.identify import Identifier
from proxy.pathguard import RouteAllowlist

KEYS = web.AppKey("autellix_keys", KeyTable)
PASSTHROUGH = web.AppKey("autellix_passthrough", RouteAllowlist)


def request_tenant(request: web.Request, identifier: Identifier) -> str:
    """The tenant a request acts for: its key's (a trusted tenant header may override it),
    or with no keys configured the open-mode tenant (hashed bearer token, or anonymous)."""
    principal = principal_of(request)
    known = None if principal is None else principal.tenant
    return identifier.tenants.tenant_of(request.headers, known)


def install(
    app: web.Application, config: ProxyConfig, identifier: Identifier, table: KeyTable
) -> Callable[[web.Request], Viewer]:
    """Keep the key table and the pass-through allowlist on the app (the edge checks keys),
    and return who a request may see in the program routes."""
    app[KEYS] = table
    app[PASSTHROUGH] = RouteAllowlist(config.passthrough_routes)
    warn_if_open(config, table)

    def viewer_of(request: web.Request) -> Viewer:
        # Open (no keys): nobody is authenticated, so nothing could be kept apart; every
        # client sees every program, and ids are looked up in its open-mode tenant first.
        principal = principal_of(request)
        return Viewer(
            request_tenant(request, identifier), admin=principal is None or principal.admin
        )

    return viewer_of
