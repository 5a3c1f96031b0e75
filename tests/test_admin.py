"""Admin routes over the process table, served by a tiny app with a stand-in error edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp.typedefs import Handler

from proxy.admin import admin_routes
from proxy.errors import ProxyError
from proxy.ids import IdGen
from proxy.table import ProcessTable, TableConfig

TABLE = web.AppKey("table", ProcessTable)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ProxyError as err:
        return web.Response(
            status=err.status, body=orjson.dumps(err.to_dict()), content_type="application/json"
        )


def filled_table() -> ProcessTable:
    table = ProcessTable(TableConfig(decode_token_s=1.0), ids=IdGen("t"))
    for i, pid in enumerate(["anonymous/agent-1", "p-2", "session:abc"]):
        for k in range(i + 1):
            _, call = table.begin(pid, now=float(10 * i + k), source="explicit")
            table.start(call, "e0", float(10 * i + k))
            table.tokens(call, 3 - i, float(10 * i + k) + 0.5)
            table.finish(call, float(10 * i + k) + 1)
        program = table.get(pid)
        assert program is not None
        program.service = float(3 - i)
    _, running = table.begin("p-2", now=50.0, thread="th", parents=("call-t1",))
    table.start(running, "e1", 51.0)
    return table


@pytest.fixture
async def client() -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application(middlewares=[errors_as_json])
    app[TABLE] = filled_table()
    app.add_routes(admin_routes(TABLE))
    async with TestClient(TestServer(app)) as client:
        yield client


async def get_json(
    client: TestClient[web.Request, web.Application], path: str, status: int = 200
) -> Any:
    response = await client.get(path)
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    return await response.json()


async def test_list_defaults(client: TestClient[web.Request, web.Application]) -> None:
    body = await get_json(client, "/v1/programs")
    assert [p["id"] for p in body["data"]] == ["p-2", "session:abc", "anonymous/agent-1"]
    assert (body["object"], body["total"], body["offset"], body["limit"], body["has_more"]) == (
        "list",
        3,
        0,
        100,
        False,
    )


async def test_list_sort_and_page(client: TestClient[web.Request, web.Application]) -> None:
    body = await get_json(client, "/v1/programs?sort=service&order=asc&limit=2")
    assert [p["id"] for p in body["data"]] == ["session:abc", "p-2"]
    assert body["has_more"] is True
    body = await get_json(client, "/v1/programs?sort=service&order=asc&limit=2&offset=2")
    assert [p["id"] for p in body["data"]] == ["anonymous/agent-1"]
    assert body["has_more"] is False
    body = await get_json(client, "/v1/programs?sort=calls&order=desc")
    assert [p["calls"] for p in body["data"]] == [3, 3, 1]
    assert [p["id"] for p in body["data"]] == ["session:abc", "p-2", "anonymous/agent-1"]


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("offset=-1", "offset"),
        ("offset=1.5", "offset"),
        ("sort=name", "sort"),
        ("order=up", "order"),
    ],
)
async def test_list_bad_params(
    client: TestClient[web.Request, web.Application], query: str, param: str
) -> None:
    body = await get_json(client, f"/v1/programs?{query}", status=400)
    assert body["error"]["param"] == param
    assert body["error"]["type"] == "invalid_request_error"
    assert param in body["error"]["message"]


async def test_get_program_with_active_calls(
    client: TestClient[web.Request, web.Application],
) -> None:
    body = await get_json(client, "/v1/programs/p-2")
    assert (body["id"], body["object"], body["calls"], body["engine"]) == (
        "p-2",
        "program",
        3,
        "e1",
    )
    assert (body["completion_tokens"], body["service"], body["tenant"]) == (4, 2.0, "anonymous")
    [call] = body["active"]
    assert (call["state"], call["thread"], call["parents"], call["engine"], call["wait"]) == (
        "running",
        "th",
        ["call-t1"],
        "e1",
        1.0,
    )


async def test_ids_with_slashes(client: TestClient[web.Request, web.Application]) -> None:
    body = await get_json(client, "/v1/programs/anonymous/agent-1")
    assert body["id"] == "anonymous/agent-1"
    body = await get_json(client, "/v1/programs/anonymous%2Fagent-1")
    assert body["id"] == "anonymous/agent-1"


async def test_unknown_program(client: TestClient[web.Request, web.Application]) -> None:
    body = await get_json(client, "/v1/programs/nope", status=404)
    assert body["error"]["code"] == "program_not_found"
    response = await client.delete("/v1/programs/nope")
    assert response.status == 404


async def test_delete(client: TestClient[web.Request, web.Application]) -> None:
    response = await client.delete("/v1/programs/session:abc")
    assert response.status == 200
    assert await response.json() == {"id": "session:abc", "object": "program", "deleted": True}
    await get_json(client, "/v1/programs/session:abc", status=404)
    response = await client.delete("/v1/programs/p-2")  # a call is running: ends with it
    assert response.status == 202
    assert (await response.json())["deleted"] is False
    body = await get_json(client, "/v1/programs/p-2")
    assert body["ending"] is True
    table = client.app[TABLE] if client.app is not None else None
    assert table is not None
    program = table.get("p-2")
    assert program is not None
    [call] = program.active.values()
    assert table.finish(call, 60.0) is True
    await get_json(client, "/v1/programs/p-2", status=404)
