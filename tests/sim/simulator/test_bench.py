"""``autellix bench`` end to end: a tiny sweep, a tiny trace replayed with ``--trace``, and
bad arguments or traces refused with a message and status 2."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import ClassVar

import pytest

from proxy.policies.base import NoConfig, Priority, assigned
from proxy.policies.fcfs import FCFS
from proxy.records import Call, Program
from proxy.sim.simulator.bench import add_bench_arguments, run_bench
from proxy.sim.simulator.sweep import CSV_COLUMNS
from proxy.trace import TraceRecord, write_trace


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="autellix bench")
    add_bench_arguments(parser)
    return parser.parse_args(list(argv))


class Newest(FCFS):
    """A plug-in for the sweep: the newest call first."""

    name: ClassVar[str] = "newest"
    Config: ClassVar[type] = NoConfig

    def priority(self, *, call: Call, program: Program, now: float) -> Priority:
        return assigned(call, Priority(0, -call.arrival))


def run(tmp: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = parse(
        "--out", str(tmp), "--workloads", "chatbot,react", "--programs", "12",
        "--rates", "0.5,1,3", "--jobs", "1", "--seeds", "1", "--context", "resend", *extra,
    )  # fmt: skip
    return run_bench(args, stdout=out, stderr=err), out.getvalue(), err.getvalue()


def test_a_tiny_sweep_end_to_end(tmp_path: Path) -> None:
    policies = f"fcfs,mlfq,plas,{__name__}:Newest"
    code, out, err = run(tmp_path, "--policies", policies, "--policy-config", 'plas={"beta": null}')
    assert code == 0, err
    with open(tmp_path / "points.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 4 * 3
    assert tuple(rows[0]) == CSV_COLUMNS
    assert {r["policy"] for r in rows} == {"fcfs", "mlfq", "plas", f"{__name__}:Newest"}
    assert all(int(r["programs"]) == 12 for r in rows)
    report = json.loads((tmp_path / "summary.json").read_text())
    assert report["factors"] == [1.5, 2.0, 3.0]
    assert report["seeds"] == [0]
    summary = report["steady"]["1.5"]
    assert set(summary) == {"chatbot", "react"}
    for policies_of in summary.values():
        assert len(policies_of) == 4
        for entry in policies_of.values():
            names = {"throughput_ratio_vs_fcfs", "throughput_ratio_vs_mlfq", "p99_ratio_vs_fcfs"}
            assert set(entry) == names | {f"{n}_is" for n in names}
    # 12 programs are no steady state (the engine served half the offered work or less while
    # they arrived): the steady reading does not know, the finite-run reading does.
    assert summary["chatbot"]["fcfs"]["throughput_ratio_vs_fcfs"]["median"] is None
    assert summary["chatbot"]["fcfs"]["throughput_ratio_vs_fcfs_is"] == "unknown"
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["speed"]["sim_tokens_per_cpu_s"] > 0
    assert meta["points"] == {"grid": 24, "refinement": 0}  # given --rates: no refinement
    assert meta["steady_window"] == {"warmup": 0.2, "cooldown": 0.2}
    finite = report["finite_run"]["1.5"]
    assert finite["chatbot"]["fcfs"]["throughput_ratio_vs_fcfs"]["median"] == pytest.approx(1.0)
    # The engine state beside the ratios, and the gauges behind it in every row.
    assert {float(r["running_mean"]) > 0 for r in rows} == {True}
    assert {0.0 <= float(r["waiting_share"]) <= 1.0 for r in rows} == {True}
    assert {0.0 <= float(r["kv_use"]) <= 1.0 for r in rows} == {True}
    assert all(int(r["measured"]) == 8 for r in rows)  # 12 less the first 2 and the last 2
    for workload in ("chatbot", "react"):
        assert (tmp_path / f"latency_{workload}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "vs fcfs" in out
    assert "tokens per CPU-second" in out
    # The plug-in has its row; the table cuts a policy's label at 14 characters.
    assert f"{__name__}:Newest"[:14] in out
    assert "24/24 points" in err


def test_the_vllm_06_baseline_runs_on_its_own_engine_and_gets_a_column(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, "--policies", "vllm-0.6,fcfs,plas", "--no-plots",
                         "--workloads", "chatbot", "--programs", "30")  # fmt: skip
    assert code == 0, err
    with open(tmp_path / "points.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cached = {(r["policy"], float(r["rate"])): float(r["cached_fraction"]) for r in rows}
    latency = {(r["policy"], float(r["rate"])): float(r["latency_mean"]) for r in rows}
    # No prefix cache on vLLM 0.6: resent contexts are prefilled again; fcfs reuses them, and
    # its programs finish sooner on the same programs.
    for rate in (0.5, 1.0, 3.0):
        assert cached[("vllm-0.6", rate)] == 0.0
        assert cached[("fcfs", rate)] > 0.3
        assert latency[("vllm-0.6", rate)] > 1.2 * latency[("fcfs", rate)]
    summary = json.loads((tmp_path / "summary.json").read_text())["steady"]["1.5"]["chatbot"]
    assert "throughput_ratio_vs_vllm_is" in summary["plas"]
    meta = json.loads((tmp_path / "meta.json").read_text())
    targets = meta["targets_and_reach_by_seed"]["1.5"]["0"]["chatbot"]["targets"]
    assert targets["latency_mean@vllm-0.6"] > targets["latency_mean"]  # its own, slower start
    assert "vs vLLM 0.6" in out


def test_the_refinement_pass_adds_points_inside_the_crossings(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, "--policies", "fcfs,plas", "--refine", "1", "--no-plots",
                         "--latency-factor", "1.2", "--workloads", "react")  # fmt: skip
    assert code == 0, err
    meta = json.loads((tmp_path / "meta.json").read_text())
    added = meta["points"]["refinement"]
    assert added > 0
    assert "refinement points" in err
    with open(tmp_path / "points.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3 + added  # one workload, two policies, three rates
    grid = {0.5, 1.0, 3.0}
    extra = {float(r["rate"]) for r in rows} - grid
    # fcfs's and plas's finite-run curves cross 1.2 x fcfs's latency at 0.5 between 0.5 and 1:
    # one rate in the middle (in log rate) for both; no curve is steady, so nothing else.
    assert extra == {round(0.5 * 2**0.5, 6)}
    assert added == 2
    assert "Finite-run reading" in out


def test_worker_processes_give_the_same_rows(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    assert run(one, "--policies", "fcfs", "--no-plots")[0] == 0
    assert run(two, "--policies", "fcfs", "--no-plots", "--jobs", "2")[0] == 0

    def rows(path: Path) -> list[dict[str, str]]:
        with open(path / "points.csv", newline="") as f:
            return [{k: v for k, v in r.items() if k != "cpu_s"} for r in csv.DictReader(f)]

    assert rows(one) == rows(two)


def test_bad_arguments_fail_before_the_sweep(tmp_path: Path) -> None:
    code, _, err = run(tmp_path, "--policies", "nope")
    assert code == 2
    assert "unknown policy 'nope'" in err
    code, _, err = run(tmp_path, "--policy-config", 'plas={"levels": 0}')
    assert code == 2
    assert "levels" in err
    code, _, err = run(tmp_path, "--workloads", "chess")
    assert code == 2
    assert "unknown workload" in err
    code, _, err = run(tmp_path, "--rerank-interval", "0")
    assert code == 2
    assert "--rerank-interval" in err
    code, _, err = run(tmp_path, "--max-num-seqs", "0")
    assert code == 2
    assert "--max-num-seqs" in err
    assert not (tmp_path / "points.csv").exists()


def tiny_trace(path: Path) -> Path:
    """Three programs, seven calls: a chain, a single call and a fan-out joined again."""

    def rec(
        program: str,
        call: str,
        arrival: float,
        finished: float,
        prompt: int,
        completion: int,
        *parents: str,
    ) -> TraceRecord:
        return TraceRecord(program, call, arrival, finished, prompt, completion, parents)

    write_trace(
        [
            rec("p1", "a", 10.0, 12.0, 100, 20),
            rec("p1", "b", 12.5, 14.0, 150, 30, "a"),
            rec("p2", "a", 11.0, 13.0, 200, 50),
            rec("p3", "a", 11.5, 13.0, 80, 10),
            rec("p3", "b", 13.2, 15.0, 120, 40, "a"),
            rec("p3", "c", 13.2, 15.5, 120, 60, "a"),
            rec("p3", "d", 16.0, 17.0, 300, 25, "b", "c"),
        ],
        path,
    )  # fmt: skip
    return path


def run_trace(tmp: Path, trace: Path, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = parse("--out", str(tmp / "out"), "--trace", str(trace), *extra)
    return run_bench(args, stdout=out, stderr=err), out.getvalue(), err.getvalue()


def test_a_trace_replays_once_per_policy(tmp_path: Path) -> None:
    trace = tiny_trace(tmp_path / "trace.jsonl")
    code, out, err = run_trace(tmp_path, trace, "--policies", f"fcfs,plas,{__name__}:Newest")
    assert code == 0, err
    with open(tmp_path / "out" / "points.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["policy"] for r in rows] == ["fcfs", "plas", f"{__name__}:Newest"]
    assert {(r["workload"], r["programs"], r["calls"]) for r in rows} == {("trace", "3", "7")}
    assert float(rows[0]["rate"]) == pytest.approx(2 / 1.5)  # 3 arrivals over 1.5 s
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["trace"] == str(trace)
    assert (summary["programs"], summary["calls"]) == (3, 7)
    assert list(summary["policies"]) == ["fcfs", "plas", f"{__name__}:Newest"]
    for latency in summary["policies"].values():
        assert set(latency) == {"latency_mean", "latency_p50", "latency_p95", "latency_p99"}
        assert 0 < latency["latency_p50"] <= latency["latency_p95"] <= latency["latency_p99"]
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["argv"]["trace"] == str(trace)
    header, *lines = out.splitlines()[1:5]
    assert header.split() == ["policy", "mean", "p50", "p95", "p99"]
    assert [line.split()[0] for line in lines] == ["fcfs", "plas", f"{__name__}:Newest"]
    assert "3 programs, 7 calls" in out
    assert "3/3 policies" in err
    assert not list((tmp_path / "out").glob("*.png"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "No such file or directory"),
        ("", "holds no calls"),
        ("not json\n", "trace line 1"),
        ('{"program": "p", "call": "c"}\n', "lacks the key 'arrival'"),
        ("[1, 2]\n", "JSON object"),
        (b"\xff\xfe\x00", "trace file"),
    ],
)
def test_a_bad_or_missing_trace_is_a_message_and_status_2(
    tmp_path: Path, content: str | bytes | None, message: str
) -> None:
    trace = tmp_path / "trace.jsonl"
    if isinstance(content, bytes):
        trace.write_bytes(content)
    elif content is not None:
        trace.write_text(content)
    code, out, err = run_trace(tmp_path, trace)
    assert code == 2
    assert err.startswith("autellix bench: trace file ")
    assert message in err
    assert "Traceback" not in err
    assert out == ""
    assert not (tmp_path / "out").exists()


def test_trace_refuses_sweep_flags_and_bad_policies(tmp_path: Path) -> None:
    trace = tiny_trace(tmp_path / "trace.jsonl")
    code, _, err = run_trace(tmp_path, trace, "--rates", "1,2")
    assert code == 2
    assert "--trace replays the recorded arrivals" in err
    code, _, err = run_trace(tmp_path, trace, "--policies", "nope")
    assert code == 2
    assert "unknown policy 'nope'" in err
    code, _, err = run_trace(tmp_path, trace, "--balancer", "nope")
    assert code == 2
    assert "unknown balancer" in err
    code, _, err = run_trace(tmp_path, tmp_path)  # a folder, not a file
    assert code == 2
    assert "trace file" in err
    assert not (tmp_path / "out").exists()


def test_missing_matplotlib_says_how_to_install_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, _out, err = run(tmp_path, "--policies", "fcfs")
    assert code == 2
    assert "pip install 'autellix-proxy[bench]'" in err
    assert "--no-plots" in err
    assert not (tmp_path / "points.csv").exists()  # refused before the sweep
    # Without plots it needs no matplotlib.
    assert run(tmp_path, "--policies", "fcfs", "--no-plots")[0] == 0
