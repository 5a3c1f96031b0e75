"""The simulated engine's ``GET /metrics``: vLLM's Prometheus metric names, read from the
engine's state at scrape time, in a registry of the app's own (no global registry)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.sim.engine.state import SimState


class _SimCollector(Collector):
    """vLLM's metric names, read from the model at scrape time."""

    def __init__(self, state: SimState) -> None:
        self._state = state

    def collect(self) -> Iterable[Metric]:
        state, model, label = self._state, self._state.model, [self._state.label]
        for name, doc, value in (
            ("vllm:num_requests_running", "Requests in the running batch.", model.num_running),
            ("vllm:num_requests_waiting", "Requests waiting to be scheduled.", model.num_waiting),
            ("vllm:kv_cache_usage_perc", "Fraction of KV blocks in use (0..1).", model.kv_usage),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["model_name"])
            gauge.add_metric(label, value)
            yield gauge
        for name, doc, total in (
            ("vllm:num_preemptions", "Preemptions (by recompute).", model.num_preemptions),
            ("vllm:prompt_tokens", "Prompt tokens of accepted requests.", state.prompt_tokens),
            ("vllm:generation_tokens", "Tokens generated.", state.generation_tokens),
        ):
            counter = CounterMetricFamily(name, doc, labels=["model_name"])
            counter.add_metric(label, total)
            yield counter
        yield _by_reason(
            "vllm:request_success", "Requests that finished, by reason.", label[0],
            "finished_reason", state.finished, ("stop", "length"),
        )  # fmt: skip
        yield _by_reason(
            "sim:num_aborted_requests",
            "Requests aborted before the end: client disconnect or POST /abort_requests.",
            label[0], "cause", state.aborted, ("disconnect", "abort_request"),
        )  # fmt: skip


def _by_reason(
    name: str, doc: str, model: str, key: str, counts: Counter[str], reasons: tuple[str, ...]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=["model_name", key])
    for reason in reasons:  # every reason listed, zeros included, so the series always exist
        family.add_metric([model, reason], counts[reason])
    return family


def metrics_handler(state: SimState) -> Handler:
    """The ``/metrics`` handler of one engine."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_SimCollector(state))

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": "text/plain; version=0.0.4"}
        )

    return metrics
