"""Prometheus metrics of one proxy instance, in a registry of its own (no global state).

prometheus_client is imported at the first scrape, not before: with what it imports (its
exposition servers, gzip, mmap) it holds about 1 MiB of a proxy's memory, and the request path
only updates the plain numbers below. The families are built from them when /metrics is read.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

from proxy.records import Program

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import Metric

# Latencies of LLM calls span milliseconds (a cached short answer) to many minutes.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
# A program (agent run) lasts from seconds to hours.
_PROGRAM_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400)
_TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


# The request path updates about ten instruments per call. prometheus_client's own take a
# lock, and its histograms walk their buckets in Python, on every update (about 1 µs each),
# and its labels() validates and locks too. These are plain numbers in one event loop's
# thread, read by a collector only when /metrics is scraped.


class Value:
    """A counter's or gauge's value (one label set)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def dec(self, amount: float = 1.0) -> None:
        self.value -= amount

    def set(self, value: float) -> None:
        self.value = value


class Observations:
    """A histogram's counts per bucket and sum (one label set)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class EngineMeters:
    """The children of one engine's labelled instruments, bound once (``Metrics.engine``):
    a call updates four of them, and each ``labels`` lookup builds and hashes a tuple."""

    __slots__ = ("admissions", "completion_tokens", "inflight", "prompt_tokens")

    def __init__(self, metrics: Metrics, engine: str) -> None:
        self.admissions = metrics.admissions.labels(engine)
        self.inflight = metrics.inflight.labels(engine)
        self.prompt_tokens = metrics.tokens.labels(engine, "prompt")
        self.completion_tokens = metrics.tokens.labels(engine, "completion")


class FamilySource(Protocol):
    """Metric families read at scrape time: a prometheus_client collector. One with a
    ``describe`` method is checked for duplicate names by what that returns, one without by
    what ``collect`` yields."""

    def collect(self) -> Iterable[Metric]: ...


class _Instrument:
    kind = ""

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = tuple(labelnames)

    def families(self) -> Iterator[Metric]:
        raise NotImplementedError


class Counter(_Instrument):
    """Counts up; exported as ``<name>_total``. ``labels`` binds a child once per values."""

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, doc, labelnames)
        self._children: dict[tuple[str, ...], Value] = {}
        self._own = self._children.setdefault((), Value()) if not labelnames else None

    def labels(self, *values: str) -> Value:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}")
            child = self._children[values] = Value()
        return child

    def inc(self, amount: float = 1.0) -> None:
        assert self._own is not None, f"{self.name} is labelled"
        self._own.value += amount

    def families(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, child in self._children.items():
            family.add_metric(values, child.value)
        yield family


class Gauge(Counter):
    """Goes up and down, or reads a function at scrape time (``set_function``)."""

    def __init__(self, name: str, doc: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, doc, labelnames)
        self._function: Callable[[], float] | None = None

    def set_function(self, function: Callable[[], float]) -> None:
        self._function = function

    def families(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(self.name, self.doc, labels=self.labelnames)
        if self._function is not None:
            family.add_metric((), float(self._function()))
        else:
            for values, child in self._children.items():
                family.add_metric(values, child.value)
        yield family


class Histogram(_Instrument):
    def __init__(
        self, name: str, doc: str, labelnames: Sequence[str] = (), *, buckets: Sequence[float]
    ) -> None:
        super().__init__(name, doc, labelnames)
        self.bounds = tuple(float(b) for b in buckets)
        self._children: dict[tuple[str, ...], Observations] = {}
        self._own = self.labels() if not labelnames else None

    def labels(self, *values: str) -> Observations:
        child = self._children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name} takes labels {self.labelnames}")
            child = self._children[values] = Observations(self.bounds)
        return child

    def observe(self, amount: float) -> None:
        assert self._own is not None, f"{self.name} is labelled"
        self._own.observe(amount)

    def families(self) -> Iterator[Metric]:
        from prometheus_client.core import HistogramMetricFamily

        family = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for values, child in self._children.items():
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), child.counts, strict=True):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            family.add_metric(values, buckets, child.sum)
        yield family


class _Instruments:
    def __init__(self, instruments: list[_Instrument]) -> None:
        self.instruments = instruments

    def collect(self) -> Iterator[Metric]:
        for instrument in self.instruments:
            yield from instrument.families()


class Metrics:
    """The proxy's instruments. Label values are bounded: routes are route templates, engines
    and sources come from configuration or small fixed sets."""

    def __init__(self) -> None:
        self.requests = Counter(
            "autellix_requests", "Requests answered, by route and status.", ["route", "status"]
        )
        self.errors = Counter(
            "autellix_errors", "Error responses, by route and error type.", ["route", "type"]
        )
        self.latency = Histogram(
            "autellix_request_latency_seconds",
            "Time from request arrival to the end of the response.",
            ["route"],
            buckets=_LATENCY_BUCKETS,
        )
        self.ttft = Histogram(
            "autellix_time_to_first_token_seconds",
            "Time from request arrival to the first streamed byte of the engine's answer "
            "(streamed calls only: a whole answer's first byte is its last).",
            ["route"],
            buckets=_TTFT_BUCKETS,
        )
        self.inflight = Gauge(
            "autellix_inflight_calls", "Calls being served by an engine now.", ["engine"]
        )
        self.upstream_errors = Counter(
            "autellix_upstream_errors",
            "Engine calls that failed before an answer (connection, timeout).",
            ["engine", "reason"],
        )
        self.client_disconnects = Counter(
            "autellix_client_disconnects",
            "Calls whose client went away before the end; their engine call was cancelled.",
            ["route"],
        )
        self.engine_healthy = Gauge(
            "autellix_engine_healthy", "1 if the engine answered its last health check.", ["engine"]
        )
        self.tokens = Counter(
            "autellix_tokens", "Tokens reported by engines, by kind.", ["engine", "kind"]
        )
        self.calls = Counter(
            "autellix_calls",
            "Generation calls, by how their program was identified "
            "(explicit, session, body, inferred, new).",
            ["source"],
        )
        # A level is a queue's name, not a quantity: counted by level, not bucketed.
        self.arrivals = Counter(
            "autellix_call_arrivals",
            "Calls as they arrive, by the policy's queue level (0 is the top queue).",
            ["level"],
        )
        self.admissions = Counter(
            "autellix_admissions",
            "Calls (or resumed parts of preempted calls) sent to an engine.",
            ["engine"],
        )
        self.program_duration = Histogram(
            "autellix_program_duration_seconds",
            "Programs that ended (their last call said so, or they went idle and were "
            "forgotten): time from their first call's arrival to their last call's end.",
            buckets=_PROGRAM_BUCKETS,
        )
        self.demotions = Counter(
            "autellix_call_demotions", "Times a running call was demoted to a lower queue."
        )
        self.preemptions = Counter(
            "autellix_preemptions",
            "Calls the proxy took off an engine for a better waiting call.",
            ["engine"],
        )
        self.resumes = Counter("autellix_resumes", "Preempted calls resumed where they stopped.")
        self.gate_waiting = Gauge(
            "autellix_gate_waiting_calls", "Calls waiting in the proxy's gate for an engine slot."
        )
        self.programs = Gauge("autellix_programs", "Programs in the process table.")
        self.retries = Counter(
            "autellix_engine_retries",
            "Calls sent again to another engine after theirs failed before answering.",
            ["engine"],
        )
        self._engines: dict[str, EngineMeters] = {}
        self._sources: list[FamilySource] = [
            _Instruments([v for v in vars(self).values() if isinstance(v, _Instrument)])
        ]
        self._registry: CollectorRegistry | None = None

    @property
    def registry(self) -> CollectorRegistry:
        """prometheus_client's registry of every family source added, built when first read
        (the first scrape)."""
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry(auto_describe=True)
            for source in self._sources:
                self._registry.register(source)
        return self._registry

    def add_collector(self, source: FamilySource) -> None:
        """Read ``source``'s families at every scrape too."""
        self._sources.append(source)
        if self._registry is not None:
            self._registry.register(source)

    def engine(self, name: str) -> EngineMeters:
        meters = self._engines.get(name)
        if meters is None:
            meters = self._engines[name] = EngineMeters(self, name)
        return meters

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
        self.add_collector(_StateCollector(waiting_levels, engine_load))

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class _StateCollector:
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
        from prometheus_client.core import GaugeMetricFamily

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
