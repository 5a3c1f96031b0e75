"""The Autellix scheduler plug-in inside a real vLLM (CPU, tiny random model).

Orderings are asserted from the scheduler's own record (``AUTELLIX_PLUGIN_SCHED_LOG``), never from
client timing: on 2 busy cores a client's view of time says little about the engine's order.
The server has two slots (``--max-num-seqs 2``); "fillers" are long calls of a program with a
large attained service (bottom level) that occupy them. Every test ends with all its requests
finished or aborted, since the server is shared by the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from proxy.backends.vllm_control import ControlChannel
from tests.vllm.conftest import VLLMServer, skip_module_without_vllm

skip_module_without_vllm()

pytestmark = pytest.mark.vllm

# Fillers' length, in tokens: ~10 s on two slots, so even a stalled client's call arrives while
# they run; tests walk away from them (the engine aborts them) rather than wait for the end.
LONG = 4000
MIN_QUANTUM = 8  # the plug-in's default AUTELLIX_PLUGIN_MIN_QUANTUM_TOKENS
SHORT = 16
HIGH_SERVICE = 1000.0  # estimated engine seconds: the bottom level with default settings
BOTTOM = 7  # the bottom level with default settings (8 levels)
TIMEOUT = aiohttp.ClientTimeout(total=120)

Events = list[dict[str, Any]]


def body(call: str, *, service: float, level: int, max_tokens: int, stream: bool) -> dict[str, Any]:
    """A completion as the proxy's vLLM adapter sends it."""
    return {
        "model": "tiny",
        "prompt": "agent program call queue",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
        "priority": level,
        "stream": stream,
        **({"stream_options": {"include_usage": True}} if stream else {}),
        "vllm_xargs": {
            "autellix_program": "p-" + call,
            "autellix_thread": "main",
            "autellix_call": call,
            "autellix_service": service,
            "autellix_level": level,
        },
    }


class Stream:
    """A streamed completion, read as it comes (as a real client would: an unread stream
    backs up into the API server and stalls it), which the test can await or walk away from."""

    def __init__(
        self, call: str, session: aiohttp.ClientSession, response: aiohttp.ClientResponse
    ) -> None:
        self.call, self.session, self.response = call, session, response
        self.usage: dict[str, Any] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, server: VLLMServer, payload: dict[str, Any]) -> Stream:
        # A session per stream: closing it drops exactly this connection.
        session = aiohttp.ClientSession(timeout=TIMEOUT)
        response = await session.post(server.base_url + "/v1/completions", json=payload)
        assert response.status == 200, await response.text()
        return cls(payload["vllm_xargs"]["autellix_call"], session, response)

    async def _read(self) -> None:
        async for line in self.response.content:
            text = line.decode().strip()
            if text.startswith("data: {"):
                self.usage = json.loads(text[6:]).get("usage") or self.usage

    async def finish(self) -> dict[str, Any]:
        """Wait for the end; the usage chunk."""
        await self._reader
        await self.disconnect()
        return self.usage

    async def disconnect(self) -> None:
        if not self.session.closed:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self.response.close()
            await self.session.close()


Opener = Callable[[dict[str, Any]], Awaitable[Stream]]


@contextlib.asynccontextmanager
async def streams_on(server: VLLMServer) -> AsyncIterator[Opener]:
    """Opens streamed completions on ``server`` and walks away from any still open at the end
    (the engine aborts them), so a failing test leaves the server idle and no socket open."""
    opened: list[Stream] = []

    async def open_(payload: dict[str, Any]) -> Stream:
        stream = await Stream.open(server, payload)
        opened.append(stream)
        return stream

    yield open_
    for stream in opened:
        await stream.disconnect()
    calls = [s.call for s in opened]
    await server.wait_events(has("finished", *calls), what="the test's calls ended")


@pytest.fixture
async def open_stream(vllm_server: VLLMServer) -> AsyncIterator[Opener]:
    async with streams_on(vllm_server) as open_:
        yield open_


async def complete(server: VLLMServer, payload: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as session,
        session.post(server.base_url + "/v1/completions", json=payload) as response,
    ):
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result


def find(events: Events, event: str, call: str, **match: Any) -> list[int]:
    """Indexes (record order = the engine's order) of ``event`` for ``call``."""
    return [
        i
        for i, e in enumerate(events)
        if e["event"] == event
        and e.get("call") == call
        and all(e.get(k) == v for k, v in match.items())
    ]


def has(event: str, *calls: str, **match: Any) -> Any:
    return lambda events: all(find(events, event, c, **match) for c in calls)


def tag() -> str:
    return uuid.uuid4().hex[:8]


async def open_fillers(
    server: VLLMServer, open_stream: Opener, prefix: str
) -> tuple[list[str], list[Stream]]:
    calls = [f"{prefix}-fill{i}" for i in range(2)]
    payloads = [
        body(c, service=HIGH_SERVICE, level=BOTTOM, max_tokens=LONG, stream=True) for c in calls
    ]
    streams = [await open_stream(p) for p in payloads]
    await server.wait_events(has("scheduled", *calls), what="fillers scheduled")
    return calls, streams


async def test_waiting_call_preempts_an_outranked_running_call(
    vllm_server: VLLMServer, open_stream: Opener
) -> None:
    server, t = vllm_server, tag()
    fillers, _ = await open_fillers(server, open_stream, t)
    high = f"{t}-high"

    answer = await complete(
        server, body(high, service=0.0, level=0, max_tokens=SHORT, stream=False)
    )
    assert answer["usage"]["completion_tokens"] == SHORT
    events = server.events()
    (arrived,) = find(events, "arrived", high)
    assert not any(find(events[:arrived], "finished", f) for f in fillers), (
        "the machine stalled: the high call reached the engine after the fillers finished"
    )
    preemptions = [
        i
        for i, e in enumerate(events)
        if e["event"] == "preempted"
        and e["by"] == "autellix"
        and e["beneficiary"] == events[arrived]["req"]
    ]
    assert len(preemptions) == 1, "exactly one filler makes room for the high-priority call"
    preempted = events[preemptions[0]]
    victim = preempted["call"]
    assert victim in fillers
    assert preempted["level"] == BOTTOM
    assert preempted["tokens"] >= MIN_QUANTUM  # it had its quantum first
    assert preempted["blocks_held"] > 0
    assert preempted["blocks_after"] == 0  # its KV was freed

    (scheduled,) = find(events, "scheduled", high)
    (finished,) = find(events, "finished", high, status="FINISHED_LENGTH_CAPPED")
    assert events[scheduled]["level"] == 0
    assert arrived < preemptions[0] < scheduled < finished

    # The victim resumes once the high call is done, with the tokens it had (recompute keeps
    # them), and goes on generating.
    events = await server.wait_events(has("scheduled", victim, resumed=True), what="victim resumed")
    (resumed,) = find(events, "scheduled", victim, resumed=True)
    assert resumed > finished
    assert events[resumed]["tokens"] == preempted["tokens"]
    assert not find(events, "finished", victim)


@pytest.fixture
def channel(vllm_server: VLLMServer) -> Iterator[ControlChannel]:
    channel = ControlChannel(vllm_server.control_addr)
    yield channel
    channel.close()


async def test_control_channel_reorders_the_waiting_queue(
    vllm_server: VLLMServer, open_stream: Opener, channel: ControlChannel
) -> None:
    server, t = vllm_server, tag()
    fillers, streams = await open_fillers(server, open_stream, t)
    first, second = f"{t}-a", f"{t}-b"
    waiting = [
        await open_stream(
            body(c, service=HIGH_SERVICE, level=BOTTOM, max_tokens=SHORT, stream=True)
        )
        for c in (first, second)
    ]
    await server.wait_events(has("arrived", first, second), what="both calls queued")
    # Same level as the fillers: no preemption; FCFS inside the level would serve `first` next.

    assert await channel.send_program_service("p-" + second, 0.0)
    events = await server.wait_events(has("scheduled", second), what="the promoted call scheduled")
    (control,) = [
        e for e in events if e["event"] == "control" and e.get("program") == "p-" + second
    ]
    (arrived,) = find(events, "arrived", second)
    assert control["reqs"] == [events[arrived]["req"]]
    (scheduled,) = find(events, "scheduled", second)
    assert events[scheduled]["level"] == 0

    assert await channel.send_call_level(first, 0)
    events = await server.wait_events(has("scheduled", first), what="the pinned call scheduled")
    (scheduled_first,) = find(events, "scheduled", first)
    assert events[scheduled_first]["level"] == 0
    # Without the update `first` (same level, earlier arrival) would have gone before `second`.
    assert scheduled < scheduled_first
    # Its new level let it in ahead of the fillers (running, or preempted and waiting).
    assert all(i > scheduled_first for f in fillers for i in find(events, "finished", f))

    for s in waiting:
        await s.finish()
    for s in streams:
        await s.disconnect()
    await server.wait_events(has("finished", *fillers), what="fillers aborted")


async def test_client_disconnect_frees_the_engine_request(
    vllm_server: VLLMServer, open_stream: Opener
) -> None:
    server, t = vllm_server, tag()
    fillers, streams = await open_fillers(server, open_stream, t)
    queued = f"{t}-queued"
    waiting = await open_stream(
        body(queued, service=HIGH_SERVICE, level=BOTTOM, max_tokens=SHORT, stream=True)
    )
    await server.wait_events(has("arrived", queued), what="the third call queued")

    # One at a time: had the running call gone first, its slot could admit the queued one.
    await waiting.disconnect()
    await server.wait_events(has("finished", queued), what="the queued call's abort")
    await streams[0].disconnect()
    events = await server.wait_events(has("finished", fillers[0]), what="the running call's abort")
    (running_done,) = find(events, "finished", fillers[0])
    assert events[running_done]["status"] == "FINISHED_ABORTED"
    assert events[running_done]["blocks_held"] > 0
    assert events[running_done]["blocks_after"] == 0
    (queued_done,) = find(events, "finished", queued)
    assert events[queued_done]["status"] == "FINISHED_ABORTED"
    assert events[queued_done]["blocks_held"] == 0
    assert not find(events, "scheduled", queued), "a call aborted in the queue never runs"

    await streams[1].disconnect()
    events = await server.wait_events(has("finished", fillers[1]), what="the last abort")
    (last,) = find(events, "finished", fillers[1], status="FINISHED_ABORTED")
    assert events[last]["kv_usage"] == 0.0  # nothing holds KV blocks any more
