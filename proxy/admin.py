"""Admin routes over the process table: list, inspect and forget programs.

``admin_routes`` takes the app key under which the table lives, so the routes work in any app
that stores one there. Errors are raised as ``ProxyError``s for the app's error middleware.
Times in the answers are unix seconds when the routes are given the app's ``WallClock``
key, else on the clock the table was driven with.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast, get_args

import orjson
from aiohttp import web

from proxy.errors import BadRequest, NotFound
from proxy.records import Call, Program
from proxy.table import ProcessTable, SortKey
from proxy.wallclock import WallClock

_SAME = WallClock(offset=0.0, started=0.0)  # times as the table has them

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
_SORTS: tuple[str, ...] = get_args(SortKey)


def call_to_dict(call: Call, clock: WallClock = _SAME) -> dict[str, Any]:
    return {
        "id": call.id,
        "thread": call.thread,
        "parents": list(call.parents),
        "state": call.state.value,
        "engine": call.engine,
        "arrival": clock.unix(call.arrival),
        "started_at": clock.unix_or_none(call.started_at),
        "prompt_tokens": call.prompt_tokens,
        "completion_tokens": call.completion_tokens,
        "start_service": call.start_service,
        "service": call.service,
        "wait": call.wait,
        "level": call.level,
    }


def program_to_dict(program: Program, clock: WallClock = _SAME) -> dict[str, Any]:
    return {
        "id": program.id,
        "object": "program",
        "tenant": program.tenant,
        "identified_by": program.identified_by,
        "created": clock.unix(program.created),
        "service": program.service,
        "critical_path": program.critical_path,
        "wait": program.wait,
        "engine": program.engine,
        "last_arrival": clock.unix(program.last_arrival),
        "last_completion": clock.unix_or_none(program.last_completion),
        "calls": program.calls,
        "prompt_tokens": program.prompt_tokens,
        "completion_tokens": program.completion_tokens,
        "ending": program.ending,
        "active": [call_to_dict(c, clock) for c in program.active.values()],
    }


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}", param=name)
    return value


def _choice(request: web.Request, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = request.query.get(name, default)
    if value not in choices:
        raise BadRequest(f"{name} must be one of {', '.join(choices)}", param=name)
    return value


@dataclass(frozen=True, slots=True)
class Viewer:
    """Whose programs a request may see: its tenant's, or every tenant's (``admin``)."""

    tenant: str
    admin: bool = False

    def scoped(self, program_id: str) -> list[str]:
        """The table ids a client's program id may stand for, most likely first: the one
        within its tenant (as the proxy filed it), then, for an admin, the id as given."""
        own = program_id if program_id.startswith(self.tenant + "/") else None
        ids = [own or f"{self.tenant}/{program_id}"]
        if self.admin and program_id not in ids:
            ids.append(program_id)
        return ids

    def may_see(self, program: Program) -> bool:
        return self.admin or program.tenant == self.tenant


ALL = Viewer("", admin=True)


def _find(table: ProcessTable, viewer: Viewer, program_id: str) -> Program | None:
    for candidate in viewer.scoped(program_id):
        program = table.get(candidate)
        if program is not None and viewer.may_see(program):
            return program
    return None


def admin_routes(
    table_key: web.AppKey[ProcessTable],
    viewer_of: Callable[[web.Request], Viewer] = lambda request: ALL,
    clock_key: web.AppKey[WallClock] | None = None,
) -> list[web.RouteDef]:
    """``GET /v1/programs``, ``GET /v1/programs/{id}``, ``DELETE /v1/programs/{id}``.

    ``viewer_of`` says whose programs a request may see (default: everyone's).
    Register them before any catch-all ``/v1/{tail}`` route."""

    def clock_of(request: web.Request) -> WallClock:
        return _SAME if clock_key is None else request.app[clock_key]

    async def list_programs(request: web.Request) -> web.Response:
        table = request.app[table_key]
        viewer = viewer_of(request)
        limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        offset = _int_param(request, "offset", 0, 0, 2**31)
        sort = _choice(request, "sort", "last_arrival", _SORTS)
        order = _choice(request, "order", "desc", ("asc", "desc"))
        if viewer.admin:
            programs = table.page(
                sort=cast(SortKey, sort), descending=order == "desc", offset=offset, limit=limit
            )
            total = len(table)
        else:
            programs, total = _tenant_page(
                table, viewer, cast(SortKey, sort), order == "desc", offset, limit
            )
        return _json(
            {
                "object": "list",
                "data": [program_to_dict(p, clock_of(request)) for p in programs],
                "total": total,
                "offset": offset,
                "limit": limit,
                "has_more": offset + len(programs) < total,
            }
        )

    async def get_program(request: web.Request) -> web.Response:
        program_id = request.match_info["program_id"]
        program = _find(request.app[table_key], viewer_of(request), program_id)
        if program is None:
            raise NotFound(f"no program {program_id!r}", param="id", code="program_not_found")
        return _json(program_to_dict(program, clock_of(request)))

    async def delete_program(request: web.Request) -> web.Response:
        program_id = request.match_info["program_id"]
        table = request.app[table_key]
        program = _find(table, viewer_of(request), program_id)
        outcome = None if program is None else table.delete(program.id)
        if outcome is None:
            raise NotFound(f"no program {program_id!r}", param="id", code="program_not_found")
        if outcome == "ending":
            # Its calls are still running; it goes when they finish.
            return _json({"id": program_id, "object": "program", "deleted": False}, status=202)
        return _json({"id": program_id, "object": "program", "deleted": True})

    return [
        web.get("/v1/programs", list_programs),
        web.get("/v1/programs/{program_id:.+}", get_program),
        web.delete("/v1/programs/{program_id:.+}", delete_program),
    ]


def _tenant_page(
    table: ProcessTable, viewer: Viewer, sort: SortKey, descending: bool, offset: int, limit: int
) -> tuple[list[Program], int]:
    """One tenant's page: the table pages all programs, so filter first, then order the few."""
    mine = [p for p in table if viewer.may_see(p)]
    key = _SORT_KEY_OF[sort]
    mine.sort(key=lambda p: (key(p), p.id), reverse=descending)
    return mine[offset : offset + limit], len(mine)


_SORT_KEY_OF: dict[str, Callable[[Program], float]] = {
    "last_arrival": lambda p: p.last_arrival,
    "service": lambda p: p.service,
    "calls": lambda p: p.calls,
}
