"""The live proxy's side of balancing: the gate asks ``Router.pick`` once per call, among the
engines with room. It fills in what each engine holds of the call's prompt (the prefix
index), asks the balancer, counts its decision and any move off a program's engine, and, for
engines without exact KV events, records the call's blocks there (the approximation). Where
an engine's block hashes have been learned for a prompt's text (``HashMap``, fed by
``proxy.kvhints.learn``), what that engine holds is read from its own events instead."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from proxy.kvhints.balancers.base import Balancer, Decision, Route, least_loaded
from proxy.kvhints.blocks import prompt_blocks
from proxy.kvhints.hashmap import HashMap
from proxy.kvhints.index import PrefixIndex
from proxy.kvhints.load import EngineLoad

if TYPE_CHECKING:  # prometheus_client is imported at the first scrape only (proxy.metrics)
    from prometheus_client.core import CounterMetricFamily, Metric

log = logging.getLogger("autellix.routing")


class Router:
    """``healthy(name)`` tells a move off an unhealthy engine from one off a full engine;
    ``approximate(name)``: record routed blocks for this engine (it sends no exact events);
    ``hashes``: the pairs of the proxy's block hashes with engines' (None: none learned)."""

    def __init__(
        self,
        balancer: Balancer,
        *,
        index: PrefixIndex | None = None,
        block_tokens: int = 16,
        healthy: Callable[[str], bool] = lambda name: True,
        approximate: Callable[[str], bool] = lambda name: True,
        hashes: HashMap | None = None,
    ) -> None:
        self.balancer = balancer
        self.index = index
        self.block_tokens = block_tokens
        self._healthy = healthy
        self._approximate = approximate
        self.decisions: Counter[str] = Counter()
        self.moves: Counter[tuple[str, str]] = Counter()  # (engine left, why)
        self.events: Counter[tuple[str, str]] = Counter()  # (engine, event kind), by the feed
        self.hashes = hashes
        self.learning: Counter[tuple[str, str]] = Counter()  # (engine, result) of learning
        self.engine_hash_matches = 0  # calls some engine was found to hold by its own hashes

    def blocks(self, body: Mapping[str, Any], *, chat: bool) -> tuple[int, ...]:
        """The call's prompt blocks, if there is an index to look them up in."""
        if self.index is None:
            return ()
        return prompt_blocks(body, chat=chat, block_tokens=self.block_tokens)

    def pick(
        self,
        engines: Sequence[EngineLoad],
        *,
        program: str,
        prompt_tokens: int,
        affinity: str | None,
        blocks: Sequence[int] = (),
        now: float,
        model: str | None = None,
    ) -> int:
        """Index into ``engines`` (never empty) of the engine for this call."""
        index = self.index
        if index is not None and blocks:
            held = index.match(blocks, (e.name for e in engines))
            if self.hashes is not None:
                mapped = self.hashes.translate(model, blocks)
                if any(h is not None for h in mapped):
                    exact = index.match_mapped(mapped, held)
                    if any(exact.values()):
                        self.engine_hash_matches += 1
                    held = {name: max(n, exact[name]) for name, n in held.items()}
            engines = [replace(e, cached=held[e.name]) for e in engines]
        route = Route(program, prompt_tokens, affinity, len(blocks))
        decision = self.balancer.choose(call=route, engines=engines, now=now)
        if not isinstance(decision, Decision) or not 0 <= decision.choice < len(engines):
            log.error(
                "balancer %s chose %r among %d engines; using the least loaded",
                self.balancer.name, decision, len(engines),
            )  # fmt: skip
            decision = Decision(least_loaded(engines), reason="invalid")
        chosen = engines[decision.choice]
        self.decisions[decision.reason or "unspecified"] += 1
        left = decision.moved_from
        if left is not None and left != chosen.name:
            why = decision.reason
            if why == "unavailable":
                why = "full" if self._healthy(left) else "unhealthy"
            self.moves[(left, why)] += 1
            log.info("program %s moved from engine %s to %s (%s)", program, left, chosen.name, why)
        if index is not None and blocks:
            index.count(len(blocks), chosen.cached)
            if self._approximate(chosen.name):
                index.stored(chosen.name, blocks)
        return decision.choice

    def forget(self, program: str) -> None:
        self.balancer.forget(program=program)

    def learned(
        self, engine: str, model: str, blocks: Sequence[int], engine_blocks: Sequence[int]
    ) -> None:
        """``engine`` hashed a prompt of ``model`` whose blocks are ``blocks`` into
        ``engine_blocks``: pair them, and drop what was recorded there for that prompt by
        approximation, so that from now on only the engine's own events (its stores and
        evictions) say whether it holds the prompt."""
        if self.hashes is None or self.index is None:
            return
        if self.hashes.learn(model, blocks, engine_blocks):
            self.index.removed(engine, blocks)
            self.learning[(engine, "learned")] += 1
        else:
            self.learning[(engine, "short")] += 1

    def collector(self, engines: Callable[[], Iterable[str]]) -> _RoutingCollector:
        return _RoutingCollector(self, engines)


class _RoutingCollector:
    def __init__(self, router: Router, engines: Callable[[], Iterable[str]]) -> None:
        self._router = router
        self._engines = engines

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic label sets

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        router = self._router
        yield _counters(
            "autellix_balancer_decisions",
            "Engine choices by the balancer, by the reason it gave.",
            ["balancer", "reason"],
            {(router.balancer.name, reason): n for reason, n in router.decisions.items()},
        )
        yield _counters(
            "autellix_affinity_moves",
            "Calls sent away from their program's engine, by that engine and why "
            "(unhealthy, full, overloaded: past the load guard).",
            ["engine", "why"],
            router.moves,
        )
        yield _counters(
            "autellix_kv_events",
            "KV cache events received from engines, by kind.",
            ["engine", "kind"],
            router.events,
        )
        yield _counters(
            "autellix_prefix_learned",
            "Finished calls whose prompt was tokenized by their engine to learn its block "
            "hashes, by result (learned, short: under one block, failed).",
            ["engine", "result"],
            router.learning,
        )
        index = router.index
        if index is None:
            return
        size = GaugeMetricFamily(
            "autellix_prefix_index_blocks",
            "Prefix blocks the index holds for each engine.",
            labels=["engine"],
        )
        for engine in sorted({*self._engines(), *index.engines()}):
            size.add_metric([engine], index.size(engine))
        yield size
        yield CounterMetricFamily(
            "autellix_prefix_lookups", "Routed calls looked up in the prefix index.",
            value=index.lookups,
        )  # fmt: skip
        yield CounterMetricFamily(
            "autellix_prefix_hit_calls",
            "Routed calls whose engine held at least one block of their prompt.",
            value=index.hits,
        )
        blocks = CounterMetricFamily(
            "autellix_prefix_blocks",
            "Prompt blocks of routed calls (asked), and those their engine held (hit).",
            labels=["result"],
        )
        blocks.add_metric(["asked"], index.blocks_asked)
        blocks.add_metric(["hit"], index.blocks_hit)
        yield blocks


def _counters(
    name: str, doc: str, labels: list[str], counts: Mapping[tuple[str, str], int]
) -> CounterMetricFamily:
    """One counter family with a sample per label pair, in sorted order."""
    from prometheus_client.core import CounterMetricFamily

    family = CounterMetricFamily(name, doc, labels=labels)
    for pair, n in sorted(counts.items()):
        family.add_metric(list(pair), n)
    return family
