"""A vLLM's own block hashes steer calls once learned: the follow-up of a prompt goes to the
engine whose events say it holds the prompt's blocks, and stops going there when the engine
evicts them."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
from aiohttp import web

from proxy.backends.registry import make_backend
from proxy.config import EngineConfig
from proxy.kvhints.balancers import PrefixAware, Tuning
from proxy.kvhints.enginehash import block_hashes
from proxy.kvhints.events import REMOVED, STORED, KVEvent, KVEventBatch
from proxy.kvhints.hashmap import HashMap
from proxy.kvhints.index import PrefixIndex
from proxy.kvhints.learn import Learner, tokenize_request
from proxy.kvhints.load import EngineLoad
from proxy.kvhints.pool import EngineState
from proxy.kvhints.router import Router
from proxy.kvhints.subscriber import apply
from proxy.serve import serving

LONG = "The same long context, block after block. " * 40


def test_text_blocks_pair_with_the_engine_blocks_at_the_same_share() -> None:
    pairs = HashMap()
    assert pairs.learn("m", [1, 2, 3, 4], [10, 20]) == 3
    assert pairs.translate("m", [1, 2, 3, 4, 5]) == [None, 10, 10, 20, None]
    assert pairs.translate("other-model", [2]) == [None]
    assert pairs.learn("m", [7], []) == 0


def test_a_follow_up_is_steered_by_the_engines_own_hashes_and_unsteered_by_eviction() -> None:
    index = PrefixIndex()
    # The simulated engine's own events are exact (none arrive here); vLLM's calls are recorded
    # by approximation until its hashes are learned.
    router = Router(
        PrefixAware(Tuning(min_match_blocks=4)),
        index=index,
        hashes=HashMap(),
        approximate=lambda name: name == "vllm",
    )
    first = router.blocks({"prompt": LONG + "first?"}, chat=False)
    follow = router.blocks({"prompt": LONG + "and then? " * 8}, chat=False)
    idle_vllm = [EngineLoad(0, 0, 0.0, "vllm"), EngineLoad(3, 0, 0.0, "sim")]
    busy_vllm = [EngineLoad(3, 0, 0.0, "vllm"), EngineLoad(0, 0, 0.0, "sim")]
    pick = dict(program="p", prompt_tokens=500, affinity=None, now=0.0, model="m")
    assert router.pick(idle_vllm, blocks=first, **pick) == 0  # type: ignore[arg-type]
    # Routed there, so recorded there by approximation; then the engine's hashes are learned
    # (as after /tokenize) and the approximation gives way to them.
    assert index.match(first, ["vllm"]) == {"vllm": len(first)}
    engine_blocks = tuple(range(1000, 1005))
    router.learned("vllm", "m", first, engine_blocks)
    assert index.match(first, ["vllm"]) == {"vllm": 0}
    assert router.learning[("vllm", "learned")] == 1
    # Nothing held by the engine's account yet: the follow-up goes by load.
    assert router.pick(busy_vllm, blocks=follow, **pick) == 1  # type: ignore[arg-type]
    # Its events say it stored the blocks: now the follow-up goes to it, busier as it is.
    counts: Counter[tuple[str, str]] = Counter()
    stored = KVEvent(STORED, tuple(h & (2**64 - 1) for h in engine_blocks), None, "GPU", 128)
    apply(index, "vllm", KVEventBatch(0.0, (stored,)), counts)
    assert index.block_sizes["vllm"] == 128
    assert router.pick(busy_vllm, blocks=follow, **pick) == 0  # type: ignore[arg-type]
    assert router.decisions["prefix"] == 1
    assert router.engine_hash_matches >= 1
    # The follow-up is answered and learned in turn (its approximation gives way again).
    router.learned("vllm", "m", follow, (*engine_blocks, 1005, 1006))
    # The engine evicts the blocks: the prompt is no longer drawn there.
    removed = KVEvent(REMOVED, (*engine_blocks, 1005, 1006))
    apply(index, "vllm", KVEventBatch(1.0, (removed,)), counts)
    assert router.pick(busy_vllm, blocks=follow, **pick) == 1  # type: ignore[arg-type]


def test_the_tokenize_request_renders_what_the_engine_cached() -> None:
    chat = {"messages": [{"role": "user", "content": "hi"}], "tools": [], "max_tokens": 3}
    assert tokenize_request("m", chat, chat=True) == {
        "model": "m",
        "messages": chat["messages"],
        "tools": [],
    }
    assert tokenize_request("m", {"prompt": "x"}, chat=False) == {"model": "m", "prompt": "x"}
    salted = {"prompt": "x", "cache_salt": "s"}
    assert tokenize_request("m", salted, chat=False) is None  # hashed with an extra key
    image = [{"type": "image_url", "image_url": {"url": "data:"}}]
    assert (
        tokenize_request("m", {"messages": [{"role": "user", "content": image}]}, chat=True) is None
    )


async def test_the_learner_tokenizes_a_finished_prompt_at_the_engine_and_pairs_its_hashes() -> None:
    seen: list[dict[str, object]] = []

    async def tokenize(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return web.json_response({"tokens": list(range(1, 41)), "count": 40})

    app = web.Application()
    app.router.add_post("/tokenize", tokenize)
    async with serving(app) as url, aiohttp.ClientSession() as session:
        config = EngineConfig(name="v", url=url, kind="vllm", kv_events_url="tcp://127.0.0.1:9")
        engine = EngineState(make_backend(config))
        index = PrefixIndex()
        router = Router(PrefixAware(), index=index, hashes=HashMap())
        index.block_sizes["v"] = 16  # as the engine's BlockStored events said
        tasks: list[asyncio.Task[None]] = []
        learner = Learner(router, lambda: session, lambda c: tasks.append(asyncio.create_task(c)))
        body = {"model": "m", "prompt": LONG, "max_tokens": 3}
        blocks = router.blocks(body, chat=False)
        index.stored("v", blocks)  # what routing recorded there
        learner.after(engine, "m", body, chat=False, blocks=blocks)
        await asyncio.gather(*tasks)
    assert seen == [{"model": "m", "prompt": LONG}]
    assert router.learning[("v", "learned")] == 1
    engine_blocks = block_hashes(list(range(1, 41)), 16)
    assert router.hashes is not None
    assert router.hashes.translate("m", blocks)[-1] == engine_blocks[-1]
    assert index.size("v") == 0  # the approximation gave way
