"""The stream relay's segment ending: a cut counts as a preemption only while the answer is
not complete."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp.test_utils import make_mocked_request

from proxy.relay import Outcome, StreamRelay

CHUNK = (
    b'data: {"id":"x","created":1,"choices":[{"index":0,"delta":{"content":"hi"},'
    b'"finish_reason":"stop"}]}\n\n'
)
DONE = b"data: [DONE]\n\n"


class Upstream:
    """An engine stream that delivers a whole answer, then calls ``after_done`` before its end
    is read (the moment a preemption request can still land)."""

    status = 200
    headers: dict[str, str] = {}

    def __init__(self, after_done: Callable[[], None]) -> None:
        self.after_done = after_done
        self.content = self
        self.reads = [CHUNK, DONE]

    async def readany(self) -> bytes:
        """As aiohttp's ``StreamReader.readany``: b"" once the stream has ended."""
        if self.reads:
            return self.reads.pop(0)
        self.after_done()
        await asyncio.sleep(0)
        return b""

    def close(self) -> None:
        pass


async def test_a_cut_after_done_leaves_the_answer_complete() -> None:
    request = make_mocked_request("POST", "/v1/chat/completions")
    relay = StreamRelay(request, {}, drop_usage_chunk=False, whole_events=True)
    answered = await relay.relay(Upstream(relay.cut), Outcome(), whole_events=True)  # type: ignore[arg-type]
    assert relay.watcher.done
    assert answered  # not resumed: a continuation after [DONE] would corrupt the answer
