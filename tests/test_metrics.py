from collections.abc import Iterator

import pytest
from prometheus_client.core import Metric

from proxy.metrics import Metrics


def test_labelled_children_are_bound_once_and_counted() -> None:
    metrics = Metrics()
    child = metrics.tokens.labels("e1", "prompt")
    assert metrics.tokens.labels("e1", "prompt") is child
    child.inc(3)
    metrics.tokens.labels("e1", "prompt").inc(2)
    metrics.tokens.labels("e2", "prompt").inc(1)
    text = metrics.render().decode()
    assert 'autellix_tokens_total{engine="e1",kind="prompt"} 5.0' in text
    assert 'autellix_tokens_total{engine="e2",kind="prompt"} 1.0' in text


def test_histograms_count_each_observation_in_its_bucket_at_scrape_time() -> None:
    metrics = Metrics()
    route = metrics.latency.labels("/v1/chat/completions")
    for seconds in (0.004, 0.005, 0.3, 900.0):
        route.observe(seconds)
    metrics.program_duration.observe(2)
    metrics.programs.set_function(lambda: 7)
    lines = dict(
        line.rsplit(" ", 1) for line in metrics.render().decode().splitlines() if line[0] != "#"
    )
    prefix = "autellix_request_latency_seconds"
    labels = 'route="/v1/chat/completions"'
    assert lines[f'{prefix}_bucket{{le="0.005",{labels}}}'] == "2.0"  # le: bounds included
    assert lines[f'{prefix}_bucket{{le="0.5",{labels}}}'] == "3.0"
    assert lines[f'{prefix}_bucket{{le="+Inf",{labels}}}'] == "4.0"
    assert float(lines[f"{prefix}_sum{{{labels}}}"]) == pytest.approx(900.309)
    assert lines['autellix_program_duration_seconds_bucket{le="1.0"}'] == "0.0"
    assert lines['autellix_program_duration_seconds_bucket{le="2.5"}'] == "1.0"
    assert lines["autellix_programs"] == "7.0"
    assert lines["autellix_resumes_total"] == "0.0"


def test_arrivals_are_counted_by_level_and_state_is_read_at_scrape_time() -> None:
    metrics = Metrics()
    metrics.arrivals.labels("0").inc()
    metrics.arrivals.labels("2").inc(2)
    metrics.watch(
        waiting_levels=lambda: [3, 1, 3],
        engine_load=lambda: [("e1", 4, 2, 0.5), ("e2", None, None, None)],
    )
    text = metrics.render().decode()
    assert 'autellix_call_arrivals_total{level="2"} 2.0' in text
    assert 'autellix_gate_waiting_calls_by_level{level="3"} 2.0' in text
    assert 'autellix_gate_waiting_calls_by_level{level="1"} 1.0' in text
    assert 'autellix_engine_requests{engine="e1",state="waiting"} 2.0' in text
    assert 'autellix_engine_kv_usage{engine="e1"} 0.5' in text
    assert 'engine="e2"' not in text  # an engine that reports nothing has no series


class _OneGauge:
    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily("extra_gauge", "A source added after the first scrape.", value=3)


def test_a_source_added_after_the_first_scrape_is_scraped_too() -> None:
    metrics = Metrics()
    assert "extra_gauge" not in metrics.render().decode()
    metrics.add_collector(_OneGauge())
    assert "extra_gauge 3.0" in metrics.render().decode()
