"""Stand-ins for serving one call without an engine or an HTTP server (``tests/test_calls.py``).

The gate, the scheduler, the engine's backend, the upstream response and the stream relay are
small recording fakes; ``make_ctx`` builds a call's context over them with the real (pure)
pool, metrics and records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from unittest.mock import Mock

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from proxy.backends.base import Capabilities
from proxy.calls import (
    CallContext,
)
from proxy.config import EngineConfig, ProxyConfig
from proxy.gate import Ticket
from proxy.intercept.identify import Identity
from proxy.kvhints.balancers import AutellixBalancer
from proxy.kvhints.pool import EnginePool, EngineState
from proxy.kvhints.router import Router
from proxy.metrics import Metrics
from proxy.policies.base import Priority
from proxy.records import Call, Program
from proxy.resume import Continuation
from proxy.state import ProxyState

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {
    "id": "cmpl-1",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello"}}],
    "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
}


class FakeBackend:
    def __init__(self, name: str, *, resume: bool = True) -> None:
        self.name = name
        self.config = EngineConfig(name=name, url=f"http://{name}", models=["m"])
        self.base_url = f"http://{name}"
        self.capabilities = Capabilities(abort=True, resume=resume)
        self.aborted: list[str] = []

    def auth_headers(self, client_authorization: str | None) -> dict[str, str]:
        return {}

    def prepare_body(self, body: dict[str, Any], *, request_id: str, hints: Any) -> dict[str, Any]:
        return {**body, "request_id": request_id}

    async def abort(self, session: Any, request_id: str) -> None:
        self.aborted.append(request_id)


class FakeScheduler:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.priority: Priority | None = None  # what ``served`` answers (None: not asked)

    def started(self, call: Call, engine: str) -> None:
        self.events.append(("started", engine))

    def preempted(self, call: Call) -> None:
        self.events.append(("preempted",))

    def served(self, call: Call, tokens: int) -> Priority | None:
        return self.priority

    def finish(self, call: Call, identity: Identity, **outcome: Any) -> None:
        self.events.append(("finish", outcome))


class FakeGate:
    """Grants the engines it is given, in turn; records what it was asked."""

    def __init__(self, *engines: EngineState, error: Exception | None = None) -> None:
        self.engines = list(engines)
        self.error = error
        self.log: list[str] = []
        self.router = Router(AutellixBalancer())

    async def acquire(self, ticket: Ticket) -> EngineState:
        if self.error is not None:
            raise self.error
        engine = self.engines.pop(0)
        ticket.engine = engine
        self.log.append(f"acquire {engine.name}")
        return engine

    def release(self, ticket: Ticket) -> None:
        self.log.append("release")

    def forget(self, ticket: Ticket) -> None:
        self.log.append("forget")

    def program_changed(self, program: Program) -> None:
        self.log.append(f"program_changed {program.id}")

    def reprioritized(self, ticket: Ticket, priority: Priority) -> None:
        self.log.append(f"reprioritized {priority.level}")
        ticket.priority = priority


class FakeSession:
    """Answers each engine's URL as scripted: an upstream, or the error connecting raises."""

    def __init__(self, **answers: FakeUpstream | OSError) -> None:
        self.answers = answers
        self.sent: list[dict[str, Any]] = []

    async def request(self, method: str, url: str, **kw: Any) -> FakeUpstream:
        name = url.removeprefix("http://").split("/")[0]
        self.sent.append({"engine": name, "method": method, "url": url, **kw})
        answer = self.answers[name]
        if isinstance(answer, OSError):
            raise aiohttp.ClientConnectorError(Mock(host=name, port=80, ssl=None), answer)
        return answer


@dataclass
class FakeUpstream:
    status: int = 200
    body: bytes = orjson.dumps(ANSWER)
    headers: CIMultiDict[str] = field(
        default_factory=lambda: CIMultiDict({"Content-Type": "application/json"})
    )
    closed: bool = False

    @property
    def content(self) -> FakeUpstream:  # the answer's bytes are all in already
        return self

    def is_eof(self) -> bool:
        return True

    async def read(self) -> bytes:
        return self.body

    async def __aenter__(self) -> FakeUpstream:
        return self

    async def __aexit__(self, *_: object) -> None:
        self.closed = True


class FakeWatcher:
    rewrite: Continuation | None = None


class FakeRelay:
    """A stream relay whose segments end as scripted: True answered, False cut."""

    def __init__(self, *segments: bool, opened: bool = False) -> None:
        self.segments = list(segments)
        self.response: web.StreamResponse | None = web.StreamResponse() if opened else None
        self.watcher = FakeWatcher()
        self.tokens = 0
        self.failed: list[Exception] = []
        self.whole_events: bool | None = None

    def cut(self) -> None:
        pass

    async def relay(
        self, upstream: Any, outcome: Any, engine: Any = None, *, whole_events: bool | None = None
    ) -> bool:
        self.whole_events = whole_events
        outcome.status = upstream.status
        if self.response is None:
            self.response = web.StreamResponse()
        return self.segments.pop(0)

    async def fail(self, err: Exception) -> None:
        self.failed.append(err)


def make_ctx(
    *engines: EngineState,
    gate: FakeGate | None = None,
    session: FakeSession | None = None,
    stream: bool = False,
) -> CallContext:
    pool = EnginePool()  # it has no way to choose an engine: the gate chooses
    for engine in engines:
        pool.engines[engine.name] = engine
    state = ProxyState(
        config=ProxyConfig(),
        metrics=Metrics(),
        pool=pool,
        scheduler=FakeScheduler(),  # type: ignore[arg-type]
        gate=gate or FakeGate(*engines),  # type: ignore[arg-type]
    )
    state.session = session or FakeSession()  # type: ignore[assignment]
    program = Program(id="p1", created=0.0)
    call = Call(id="c1", program_id="p1", arrival=0.0)
    return CallContext(
        request=make_mocked_request("POST", "/v1/chat/completions"),
        state=state,
        route="/v1/chat/completions",
        chat=True,
        stream=stream,
        model="m",
        body=dict(CHAT),
        identity=Identity(program_id="p1", source="header"),
        program=program,
        call=call,
        request_id="req-1",
        headers={"X-Request-Id": "req-1"},
        drop_usage=False,
        arrived=0.0,
    )


def engine(name: str, **kwargs: Any) -> EngineState:
    return EngineState(FakeBackend(name, **kwargs), models=frozenset({"m"}))  # type: ignore[arg-type]


def sample(ctx: CallContext, name: str, **labels: str) -> float | None:
    return ctx.state.metrics.registry.get_sample_value(name, labels)


def ticket_of(ctx: CallContext) -> Ticket:
    return Ticket(call=ctx.call, program=ctx.program, model=ctx.model)
