"""Prometheus metrics of one proxy instance, in a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latencies of LLM calls span milliseconds (a cached short answer) to many minutes.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
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
            "Time from request arrival to the first streamed byte of the engine's answer.",
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
        self.arrival_level = Histogram(
            "autellix_call_arrival_level",
            "The policy's queue level of calls as they arrive (0 is the top queue).",
            buckets=(0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16),
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
        self.retries = Counter(
            "autellix_engine_retries",
            "Calls sent again to another engine after theirs failed before answering.",
            ["engine"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
