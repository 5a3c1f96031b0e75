"""The router: the balancer's choice, moves counted, prefix blocks looked up and recorded."""

from __future__ import annotations

import pytest

from proxy.app import build_router
from proxy.backends.registry import make_backend
from proxy.config import EngineConfig, ProxyConfig
from proxy.errors import ConfigError
from proxy.kvhints.balancers import AutellixBalancer, PrefixAware, Tuning
from proxy.kvhints.index import PrefixIndex
from proxy.kvhints.load import EngineLoad
from proxy.kvhints.pool import EnginePool
from proxy.kvhints.router import Router
from proxy.metrics import Metrics


def loads(*names: str, queued: int = 0) -> list[EngineLoad]:
    return [EngineLoad(queued, 0, 0.0, name) for name in names]


def test_moves_off_the_programs_engine_are_counted_by_why() -> None:
    up = {"a", "b"}
    router = Router(AutellixBalancer(), healthy=lambda name: name in up)
    pick = dict(program="p", prompt_tokens=4000, now=0.0)
    assert router.pick(loads("a", "b"), affinity="b", **pick) == 1  # type: ignore[arg-type]
    assert router.pick(loads("a"), affinity="b", **pick) == 0  # type: ignore[arg-type]
    up.discard("b")
    assert router.pick(loads("a"), affinity="b", **pick) == 0  # type: ignore[arg-type]
    heavy = [EngineLoad(0, 0, 0.0, "a"), EngineLoad(50, 0, 0.0, "b")]
    assert router.pick(heavy, affinity="b", **pick) == 0  # type: ignore[arg-type]
    assert router.moves == {("b", "full"): 1, ("b", "unhealthy"): 1, ("b", "overloaded"): 1}
    assert router.decisions["affinity"] == 1


def test_routed_blocks_teach_the_index_and_the_next_call_follows() -> None:
    index = PrefixIndex()
    router = Router(PrefixAware(Tuning(min_match_blocks=2)), index=index)
    blocks = router.blocks({"prompt": "x" * 64 * 5}, chat=False)
    assert len(blocks) == 5
    first = router.pick(
        [EngineLoad(3, 0, 0.0, "a"), EngineLoad(0, 0, 0.0, "b")],
        program="p", prompt_tokens=80, affinity=None, blocks=blocks, now=0.0,
    )  # fmt: skip
    assert first == 1
    assert index.size("b") == 5
    # The engine holding the prefix wins over a less loaded one.
    again = router.pick(
        [EngineLoad(0, 0, 0.0, "a"), EngineLoad(2, 0, 0.0, "b")],
        program="q", prompt_tokens=80, affinity=None, blocks=blocks, now=0.0,
    )  # fmt: skip
    assert again == 1
    assert (index.lookups, index.hits, index.blocks_asked, index.blocks_hit) == (2, 1, 10, 5)


def test_engines_with_exact_events_are_not_approximated() -> None:
    index = PrefixIndex()
    router = Router(AutellixBalancer(), index=index, approximate=lambda name: name != "a")
    router.pick(loads("a"), program="p", prompt_tokens=1, affinity=None, blocks=(1, 2), now=0.0)
    assert len(index) == 0


def test_metrics_show_decisions_moves_and_the_index() -> None:
    index = PrefixIndex()
    index.stored("a", [1, 2, 3])
    router = Router(AutellixBalancer(), index=index, healthy=lambda name: False)
    router.pick(loads("a"), program="p", prompt_tokens=4000, affinity="b", blocks=(1, 9), now=0)
    router.events[("a", "BlockStored")] += 1
    metrics = Metrics()
    metrics.add_collector(router.collector(lambda: ["a", "b"]))
    text = metrics.render().decode()
    assert 'autellix_balancer_decisions_total{balancer="autellix",reason="unavailable"} 1.0' in text
    assert 'autellix_affinity_moves_total{engine="b",why="unhealthy"} 1.0' in text
    assert 'autellix_prefix_index_blocks{engine="a"} 4.0' in text
    assert 'autellix_prefix_index_blocks{engine="b"} 0.0' in text
    assert 'autellix_prefix_blocks_total{result="hit"} 1.0' in text
    assert 'autellix_kv_events_total{engine="a",kind="BlockStored"} 1.0' in text


def test_the_app_builds_the_configured_balancer_or_names_the_bad_one() -> None:
    engines = [
        EngineConfig(name="s", url="http://s", kind="sim", kv_events_url="tcp://127.0.0.1:5"),
        EngineConfig(name="v", url="http://v", kind="vllm", kv_events_url="tcp://127.0.0.1:6"),
    ]
    config = ProxyConfig(engines=engines, routing={"balancer": "autellix", "min_match_tokens": 40})
    router = build_router(config, EnginePool(make_backend(e) for e in engines))
    assert router.balancer.name == "autellix"
    assert router.balancer.tuning.min_match_blocks == 3  # type: ignore[attr-defined]
    # The simulated engine's events are exact; a vLLM's hash differently: approximated too.
    router.pick(loads("s"), program="p", prompt_tokens=1, affinity=None, blocks=(1,), now=0)
    router.pick(loads("v"), program="p", prompt_tokens=1, affinity=None, blocks=(1,), now=0)
    assert router.index is not None
    assert (router.index.size("s"), router.index.size("v")) == (0, 1)
    with pytest.raises(ConfigError, match="unknown balancer 'nope'"):
        build_router(ProxyConfig(routing={"balancer": "nope"}), EnginePool())
