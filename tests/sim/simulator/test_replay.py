"""Replaying a trace under a policy: the same numbers as the simulator run by hand, the recorded
arrival rate, the summary and the table, and a bad trace refused with a message."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from proxy.policies.fcfs import FCFS
from proxy.sim.simulator.des import Simulator
from proxy.sim.simulator.replay import (
    arrival_rate,
    format_latency_table,
    load_programs,
    replay_row,
    summary,
)
from proxy.sim.simulator.results import metrics
from proxy.sim.simulator.simconfig import SimConfig
from proxy.sim.simulator.workloads import from_trace, generate
from proxy.trace import TraceRecorder, read_trace


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    """A trace the simulator itself records, as the live proxy would."""
    path = tmp_path / "trace.jsonl"
    with TraceRecorder.open(path) as recorder:
        Simulator(SimConfig(), FCFS(), recorder=recorder).run(
            generate("react", rate=0.5, programs=6, seed=3)
        )
    return path


def test_a_row_is_the_simulator_run_on_the_replayed_programs(trace: Path) -> None:
    programs = load_programs(trace)
    assert len(programs) == 6
    row = replay_row(programs, "fcfs", {}, SimConfig())
    direct = metrics(Simulator(SimConfig(), FCFS()).run(from_trace(read_trace(trace))))
    expected = {k: v for k, v in dataclasses.asdict(direct).items() if k != "cpu_s"}
    assert {k: row[k] for k in expected} == expected
    assert (row["workload"], row["policy"], row["load"], row["seed"]) == ("trace", "fcfs", "", "")
    assert row["rate"] == pytest.approx(arrival_rate(programs), abs=1e-6)


def test_arrival_rate_over_the_recorded_span(trace: Path) -> None:
    programs = load_programs(trace)
    span = programs[-1].arrival - programs[0].arrival
    assert arrival_rate(programs) == pytest.approx(5 / span)
    assert arrival_rate(programs[:1]) == 0.0


def test_summary_and_table_name_every_policy(trace: Path) -> None:
    programs = load_programs(trace)
    rows = [replay_row(programs, p, {}, SimConfig()) for p in ("fcfs", "plas")]
    result = summary(rows, trace)
    assert result["programs"] == 6
    assert result["calls"] == sum(len(p.calls) for p in programs)
    assert set(result["policies"]) == {"fcfs", "plas"}
    nan_row = {**rows[0], "latency_p99": math.nan}
    assert summary([nan_row], trace)["policies"]["fcfs"]["latency_p99"] is None
    table = format_latency_table(rows).splitlines()
    assert table[0].split() == ["policy", "mean", "p50", "p95", "p99"]
    assert float(table[1].split()[1]) == pytest.approx(rows[0]["latency_mean"], abs=1e-4)


def test_a_bad_trace_names_the_file_and_the_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"trace file .*No such file"):
        load_programs(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"program": "p", "call": "c", "arrival": 0, "finished": 1,'
                   ' "prompt_tokens": 1, "completion_tokens": 1}\n{oops\n')  # fmt: skip
    with pytest.raises(ValueError, match=r"trace file .*trace line 2"):
        load_programs(bad)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="holds no calls"):
        load_programs(empty)
