"""Prometheus metrics of one proxy instance, in a registry of its own (no global state)."""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from proxy.records import Program

# Latencies of LLM calls span milliseconds (a cached short answer) to many minutes.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# A program (agent run) lasts from seconds to hours.
_PROGRAM_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
_TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The proxy's instruments. Label values are bounded: routes are route templates, engines
    and sources come from configuration or small fixed sets."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "autellix_requests",
            "Requests answered, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.errors = Counter(
            "autellix_errors",
            "Error responses, by route and error type.",
            ["route", "type"],
            registry=r,
        )
        self.latency = Histogram(
            "autellix_request_latency_seconds",
            "Time from request arrival to the end of the response.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "autellix_time_to_first_token_seconds",
            "Time from request arrival to the first streamed byte of the engine's answer "
            "(streamed calls only: a whole answer's first byte is its last).",
            ["route"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge(
            "autellix_inflight_calls",
            "Calls being served by an engine now.",
            ["engine"],
            registry=r,
        )
        self.upstream_errors = Counter(
            "autellix_upstream_errors",
            "Engine calls that failed before an answer (connection, timeout).",
            ["engine", "reason"],
            registry=r,
        )
        self.client_disconnects = Counter(
            "autellix_client_disconnects",
            "Calls whose client went away before the end; their engine call was cancelled.",
            ["route"],
            registry=r,
        )
        self.engine_healthy = Gauge(
            "autellix_engine_healthy",
            "1 if the engine answered its last health check.",
            ["engine"],
            registry=r,
        )
        self.tokens = Counter(
            "autellix_tokens",
            "Tokens reported by engines, by kind.",
            ["engine", "kind"],
            registry=r,
        )

        self.calls = Counter(
            "autellix_calls",
            "Generation calls, by how their program was identified "
            "(explicit, session, body, inferred, new).",
            ["source"],
            registry=r,
        )
        # A level is a queue's name, not a quantity: counted by level, not bucketed.
        self.arrivals = Counter(
            "autellix_call_arrivals",
            "Calls as they arrive, by the policy's queue level (0 is the top queue).",
            ["level"],
            registry=r,
        )
        self.admissions = Counter(
            "autellix_admissions",
            "Calls (or resumed parts of preempted calls) sent to an engine.",
            ["engine"],
            registry=r,
        )
        self.program_duration = Histogram(
            "autellix_program_duration_seconds",
            "Programs that ended (their last call said so, or they went idle and were "
            "forgotten): time from their first call's arrival to their last call's end.",
            buckets=_PROGRAM_BUCKETS,
            registry=r,
        )
        self.demotions = Counter(
            "autellix_call_demotions",
            "Times a running call was demoted to a lower queue.",
            registry=r,
        )
        self.preemptions = Counter(
            "autellix_preemptions",
            "Calls the proxy took off an engine for a better waiting call.",
            ["engine"],
            registry=r,
        )
        self.resumes = Counter(
            "autellix_resumes", "Preempted calls resumed where they stopped.", registry=r
        )
        self.gate_waiting = Gauge(
            "autellix_gate_waiting_calls",
            "Calls waiting in the proxy's gate for an engine slot.",
            registry=r,
        )
        self.programs = Gauge("autellix_programs", "Programs in the process table.", registry=r)

    def program_ended(self, program: Program) -> None:
        if program.last_completion is not None:
            self.program_duration.observe(program.last_completion - program.created)

    def watch(
        self,
        *,
        waiting_levels: Callable[[], Iterable[int]],
        engine_load: Callable[[], Iterable[tuple[str, int | None, int | None, float | None]]],
    ) -> None:
        """Read, at scrape time, the levels of the calls waiting in the gate and each engine's
        reported load ``(name, running, waiting, kv_usage)``: nothing to keep in step."""
        self.registry.register(_StateCollector(waiting_levels, engine_load))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(
        self,
        waiting_levels: Callable[[], Iterable[int]],
        engine_load: Callable[[], Iterable[tuple[str, int | None, int | None, float | None]]],
    ) -> None:
        self._levels = waiting_levels
        self._load = engine_load

    def describe(self) -> Iterable[Metric]:
        return []  # dynamic label sets: nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        waiting = GaugeMetricFamily(
            "autellix_gate_waiting_calls_by_level",
            "Calls waiting in the proxy's gate, by their queue level now.",
            labels=["level"],
        )
        for level, count in sorted(Tally(self._levels()).items()):
            waiting.add_metric([str(level)], count)
        yield waiting
        requests = GaugeMetricFamily(
            "autellix_engine_requests",
            "Requests at each engine as the engine last reported them, by state.",
            labels=["engine", "state"],
        )
        kv = GaugeMetricFamily(
            "autellix_engine_kv_usage",
            "Fraction of the engine's KV cache in use, as it last reported (0..1).",
            labels=["engine"],
        )
        for name, running, queued, kv_usage in self._load():
            if running is not None:
                requests.add_metric([name, "running"], running)
            if queued is not None:
                requests.add_metric([name, "waiting"], queued)
            if kv_usage is not None:
                kv.add_metric([name], kv_usage)
        yield requests
        yield kv
