"""``autellix bench`` end to end on a tiny sweep, and its plan and summaries."""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path
from typing import ClassVar

import pytest

from proxy.policies.base import NoConfig, Priority, assigned
from proxy.policies.fcfs import FCFS
from proxy.records import Call, Program
from proxy.sim.bench import CSV_COLUMNS, add_bench_arguments, plan, run_bench


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
        "--rates", "0.5,1,3", "--jobs", "1", *extra,
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
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary) == {"chatbot", "react"}
    for policies_of in summary.values():
        assert len(policies_of) == 4
        for entry in policies_of.values():
            assert set(entry) == {
                "throughput_ratio_vs_fcfs",
                "throughput_ratio_vs_mlfq",
                "p99_ratio_vs_fcfs",
            }
    assert summary["chatbot"]["fcfs"]["throughput_ratio_vs_fcfs"] == pytest.approx(1.0)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["speed"]["sim_tokens_per_cpu_s"] > 0
    for workload in ("chatbot", "react"):
        assert (tmp_path / f"latency_{workload}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "vs fcfs" in out
    assert "tokens per CPU-second" in out
    assert "Newest" in out
    assert "24/24 points" in err


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
    assert not (tmp_path / "points.csv").exists()


def test_quick_plan_is_small_and_full_plan_covers_the_grid() -> None:
    quick = plan(parse("--quick"))
    full = plan(parse())
    assert len(quick) == 4 * 4 * 4
    assert len(full) == 4 * 5 * 10
    assert {p.policy for p in full} == {"fcfs", "mlfq", "plas", "atlas", "srpt"}
    faster = plan(parse("--preset", "llama31-8b-h100", "--engines", "2"))
    assert faster[0].rate > 2 * full[0].rate  # the default grid follows the engines' speed
