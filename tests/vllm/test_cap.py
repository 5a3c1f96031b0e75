"""The admission cap inside a real vLLM (CPU, tiny random model): the engine may run four
sequences (``--max-num-seqs 4``) but the plug-in caps it at two (``AUTELLIX_PLUGIN_CAP=fixed``,
``AUTELLIX_PLUGIN_CAP_K=2``). Asserted from the scheduler's own record, as in
test_scheduler.py: every admission leaves at most two running, a call at the fillers' level
waits although vLLM has room, and a better-ranked call that arrives after it runs first, by
preempting a filler under the core's rule.

The module starts its own server (the session's has two sequences and no cap)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.vllm.conftest import ServerFailed, VLLMServer, serve, skip_module_without_vllm
from tests.vllm.test_scheduler import (
    BOTTOM,
    HIGH_SERVICE,
    LONG,
    SHORT,
    Opener,
    body,
    find,
    has,
    streams_on,
    tag,
)

skip_module_without_vllm()

pytestmark = pytest.mark.vllm

K = 2


@pytest.fixture(scope="module")
def capped_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VLLMServer]:
    env = {"AUTELLIX_PLUGIN_CAP": "fixed", "AUTELLIX_PLUGIN_CAP_K": str(K)}
    try:
        with serve(
            tmp_path_factory.mktemp("vllm-cap"), args=("--max-num-seqs", "4"), environ=env
        ) as s:
            yield s
    except ServerFailed as exc:
        pytest.fail(str(exc))


@pytest.fixture
async def open_capped(capped_server: VLLMServer) -> AsyncIterator[Opener]:
    async with streams_on(capped_server) as open_:
        yield open_


async def test_cap_holds_the_running_set_and_admits_the_best_first(
    capped_server: VLLMServer, open_capped: Opener
) -> None:
    t = tag()
    fillers = [f"{t}-fill{i}" for i in range(K)]
    for call in fillers:
        await open_capped(
            body(call, service=HIGH_SERVICE, level=BOTTOM, max_tokens=LONG, stream=True)
        )
    await capped_server.wait_events(has("scheduled", *fillers), what="fillers scheduled")
    # Same level as the fillers: it cannot preempt them, and the cap keeps it out although
    # vLLM has two sequences free.
    same = f"{t}-same"
    await open_capped(body(same, service=HIGH_SERVICE, level=BOTTOM, max_tokens=SHORT, stream=True))
    await capped_server.wait_events(has("arrived", same), what="the same-level call arrived")
    # The best-ranked call arrives last and runs first.
    best = f"{t}-best"
    stream = await open_capped(body(best, service=0.0, level=0, max_tokens=SHORT, stream=True))
    await stream.finish()
    events = await capped_server.wait_events(has("finished", best), what="the best call ended")

    scheduled = [
        e for e in events if e["event"] == "scheduled" and str(e.get("call", "")).startswith(t)
    ]
    assert scheduled
    assert all(e["running"] <= K for e in scheduled)
    assert all(e["cap"] == K for e in scheduled)
    (arrived,) = find(events, "arrived", best)
    best_req = events[arrived]["req"]
    preempted = [
        e for e in events if e["event"] == "preempted" and e.get("beneficiary") == best_req
    ]
    assert preempted  # a filler gave its place: the cap was full, vLLM was not
    assert preempted[0]["call"] in fillers
    first_best = find(events, "scheduled", best)[0]
    same_runs = find(events, "scheduled", same)
    assert not same_runs or same_runs[0] > first_best
