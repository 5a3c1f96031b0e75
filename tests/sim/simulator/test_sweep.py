"""The sweep's plan: the default grids, the flags that change them, and bad arguments."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from proxy.core.concurrency import for_policy
from proxy.core.retention import RetentionConfig
from proxy.policies.registry import PolicyRegistry
from proxy.sim.simulator.bench import add_bench_arguments
from proxy.sim.simulator.sweep import (
    Point,
    make_policy,
    plan,
    policy_configs,
    refine,
    refine_count,
    run_point,
    split_names,
)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="autellix bench")
    add_bench_arguments(parser)
    return parser.parse_args(list(argv))


def test_quick_plan_is_small_and_full_plan_covers_the_grid() -> None:
    quick = plan(parse("--quick"))
    full = plan(parse("--seeds", "1", "--context", "resend"))
    assert len(quick) == 4 * 6 * 4  # workloads x policies x loads, one seed, resent contexts
    assert len(full) == 4 * 11 * 6
    assert {p.policy for p in full} == {
        "vllm-0.6", "fcfs", "fcfs+retain", "mlfq", "plas", "atlas", "srpt",
        "srpt-capped", "continuum", "llmd-las", "turn-priority",
    }  # fmt: skip
    # The paper's first baseline: fcfs on vLLM 0.6 (no chunked prefill, no prefix cache), on a
    # grid scaled down to where it saturates; every other curve on the configured engines.
    # Its engines also pay vLLM 0.6.1's scheduler time on every step.
    vllm = [p for p in full if p.workload == "chatbot" and p.policy == "vllm-0.6"]
    assert {v.config.shape.step_cost().base_s > v.config.shape.cost.base_s for v in vllm} == {True}
    fcfs = [p for p in full if p.workload == "chatbot" and p.policy == "fcfs"]
    assert [v.rate for v in vllm] == pytest.approx([0.25 * f.rate for f in fcfs])
    assert {v.config.shape.chunked_prefill for v in vllm} == {False}
    assert {v.config.shape.prefix_cache for v in vllm} == {False}
    assert {v.config.shape.max_num_batched_tokens for v in vllm} == {32768}
    assert {(f.config.shape.chunked_prefill, f.config.shape.prefix_cache) for f in fcfs} == {
        (True, True)
    }
    faster = plan(parse("--preset", "llama31-8b-h100", "--engines", "2", "--seeds", "1"))
    assert faster[0].rate > 2 * full[0].rate  # the default grid follows the engines' speed


def test_the_full_default_runs_five_seeds_of_both_contexts_and_chatbot_sigmas() -> None:
    points = plan(parse("--workloads", "chatbot,react", "--policies", "fcfs",
                        "--sigma", "0.5,1,1.5"))  # fmt: skip
    cases = {p.case for p in points}
    # The sigma sweep is chatbot's, under the first context listed (resent).
    assert cases == {"chatbot", "chatbot-sigma0.5", "chatbot-sigma1.5", "chatbot-fresh",
                     "react", "react-fresh"}  # fmt: skip
    for case in cases:
        seeds = {p.seed for p in points if p.case == case}
        assert seeds == {0, 1, 2, 3, 4}
    wide = next(p for p in points if p.case == "chatbot-sigma1.5")
    assert wide.specs["chatbot"].output_tokens.sigma == 1.5
    assert wide.specs["chatbot"].output_tokens.mean == 276.81  # the mean is kept
    assert wide.specs["react"] == next(p for p in points if p.case == "react").specs["react"]
    assert {p.fresh for p in points if p.case.endswith("-fresh")} == {True}
    with pytest.raises(ValueError, match="--context"):
        plan(parse("--context", "sometimes"))
    with pytest.raises(ValueError, match="--seeds"):
        plan(parse("--seeds", "0"))


def test_pseudo_policies_get_their_engine_settings() -> None:
    points = plan(parse("--workloads", "lats", "--policies",
                        "continuum,srpt-capped,srpt-k24,llmd-las", "--rates", "1",
                        "--seeds", "1", "--context", "resend"))  # fmt: skip
    config = {p.policy: p.config for p in points}
    assert config["continuum"].retention.ttl == "learned"
    assert config["continuum"].cap.mode == "off"
    assert (config["srpt-capped"].cap.mode, config["srpt-capped"].cap.k) == ("fixed", 24)
    assert (config["srpt-k24"].cap.mode, config["srpt-k24"].cap.k) == ("fixed", 24)
    # The peers' policies run uncapped: the default "auto" cap turns off for them.
    llmd = config["llmd-las"]
    effective = for_policy(llmd.cap, PolicyRegistry().create("llmd-las"), retains=False)
    assert (effective.mode, llmd.retention.ttl) == ("off", None)


def test_given_rates_and_settings_reach_every_point() -> None:
    points = plan(
        parse("--workloads", "react", "--policies", "fcfs,plas", "--rates", "2,1", "--seeds", "1", "--context", "resend",
              "--programs", "7", "--engines", "2", "--policy-config", 'plas={"beta": null}')
    )  # fmt: skip
    assert [(p.policy, p.rate) for p in points] == [
        ("fcfs", 1.0), ("fcfs", 2.0), ("plas", 1.0), ("plas", 2.0)
    ]  # fmt: skip
    assert {p.programs for p in points} == {7}
    assert {p.config.engines for p in points} == {2}
    assert points[2].policy_config == {"beta": None}


def test_names_and_policy_configs_parse_or_refuse() -> None:
    assert split_names(" a, b ,,c", ("x",)) == ["a", "b", "c"]
    assert split_names(None, ("x", "y")) == ["x", "y"]
    assert policy_configs(['plas={"beta": 4}']) == {"plas": {"beta": 4}}
    with pytest.raises(ValueError, match="NAME=JSON"):
        policy_configs(["plas"])
    with pytest.raises(ValueError, match="object"):
        policy_configs(["plas=[1]"])
    with pytest.raises(ValueError, match="rates must be positive"):
        plan(parse("--rates", "0,1"))


def fake_rows(points: list[Point], curves: dict[str, list[float]]) -> list[dict[str, object]]:
    """Rows for the points, each policy's latencies (mean; P99 twice it) in rate order."""
    rates = sorted({p.rate for p in points})
    return [
        {"workload": p.workload, "policy": p.policy, "rate": p.rate,
         "latency_mean": curves[p.policy][rates.index(p.rate)],
         "latency_p99": 2 * curves[p.policy][rates.index(p.rate)]}
        for p in points
    ]  # fmt: skip


def test_refine_adds_rates_inside_each_crossing_and_extends_curves_that_never_cross() -> None:
    points = plan(parse("--workloads", "chatbot", "--policies", "fcfs,plas,srpt,mlfq",
                        "--rates", "1,2,4,8", "--programs", "10", "--seeds", "1",
                        "--context", "resend"))  # fmt: skip
    rows = fake_rows(
        points,
        {
            "fcfs": [1.0, 1.2, 9.0, 20.0],  # knee between 2 and 4 (target 5)
            "plas": [1.0, 1.1, 2.0, 30.0],  # crosses between 4 and 8
            "srpt": [1.0, 1.0, 1.0, 1.5],  # never crosses: extend past 8
            "mlfq": [6.0, 7.0, 8.0, 9.0],  # starts above: nothing to refine
        },
    )
    added = refine(points, rows, factor=5.0, count=3)
    by_policy: dict[str, list[float]] = {}
    for p in added:
        by_policy.setdefault(p.policy, []).append(p.rate)
    assert by_policy["fcfs"] == pytest.approx([2 * 2 ** (k / 4) for k in (1, 2, 3)], rel=1e-5)
    assert by_policy["plas"] == pytest.approx([4 * 2 ** (k / 4) for k in (1, 2, 3)], rel=1e-5)
    assert by_policy["srpt"] == pytest.approx([8 * 1.5, 8 * 1.5**2])
    assert "mlfq" not in by_policy
    for p in added:  # a refinement point is its curve's point at another rate
        assert (p.programs, p.warmup, p.cooldown) == (10, 0.2, 0.2)
        assert p.load == pytest.approx(p.rate / 1.3, rel=1e-3)  # chatbot's base rate
    assert refine(points, rows, factor=5.0, count=0) == []
    # Run again with the new points in: no rate is swept twice.
    again = refine([*points, *added[:1]], rows, 5.0, 3)
    assert {(p.policy, p.rate) for p in again} == {(p.policy, p.rate) for p in added[1:]}


def test_refine_count_defaults_and_bad_window_shares() -> None:
    assert refine_count(parse()) == 1
    assert refine_count(parse("--quick")) == 1
    assert refine_count(parse("--rates", "1,2")) == 0
    assert refine_count(parse("--rates", "1,2", "--refine", "4")) == 4
    with pytest.raises(ValueError, match="warm-up"):
        plan(parse("--warmup", "0.7", "--cooldown", "0.4"))
    with pytest.raises(ValueError, match="--refine"):
        plan(parse("--refine", "-1"))


def test_a_point_measures_its_steady_window_only() -> None:
    (point,) = plan(parse("--workloads", "chatbot", "--policies", "fcfs", "--rates", "0.5",
                          "--programs", "20", "--seeds", "1", "--context", "resend"))  # fmt: skip
    row = run_point(point)
    assert (row["programs"], row["measured"]) == (20, 12)
    whole = run_point(dataclasses.replace(point, warmup=0.0, cooldown=0.0))
    assert whole["measured"] == 20
    assert whole["latency_mean"] != row["latency_mean"]
    assert 0.0 <= row["late_share"] <= 1.0


def test_refine_also_brackets_where_the_engines_fall_behind() -> None:
    points = plan(parse("--workloads", "react", "--policies", "srpt,fcfs", "--rates", "1,2,4,8",
                        "--programs", "10", "--seeds", "1", "--context", "resend"))  # fmt: skip
    rows = fake_rows(points, {"srpt": [1.0, 1.0, 1.2, 1.5], "fcfs": [1.0, 1.0, 9.0, 9.0]})
    for row in rows:  # srpt's run at 4 and 8 fell behind the arrivals: not a steady state
        row["served_share"] = 0.7 if float(str(row["rate"])) >= 4 else 1.0
    srpt = sorted(p.rate for p in refine(points, rows, factor=5.0, count=1) if p.policy == "srpt")
    # Steady: it crosses between 2 and 4 (no extension past 8 for the low finite-run mean).
    assert srpt == pytest.approx([2 * 2**0.5], rel=1e-5)


def test_kv_evict_auto_gives_each_curve_its_deployed_engine() -> None:
    names = "fcfs,fcfs+retain,plas,atlas,srpt-capped,vllm-0.6,continuum,llmd-las"
    argv = ("--workloads", "react", "--policies", names, "--rates", "1", "--seeds", "1",
            "--context", "resend")  # fmt: skip
    config = {p.policy: p.config.retention for p in plan(parse(*argv))}
    plugin = RetentionConfig(evict="rank", ttl="learned")
    for name in ("fcfs+retain", "plas", "atlas", "srpt-capped"):
        assert config[name] == plugin, name
    for name in ("fcfs", "vllm-0.6", "llmd-las"):
        assert config[name] == RetentionConfig(), name
    assert (config["continuum"].evict, config["continuum"].ttl) == ("lru", "learned")
    # An explicit order applies to every curve; the ablation keeps the plug-in's retention.
    config = {p.policy: p.config.retention for p in plan(parse(*argv, "--kv-evict", "lru"))}
    assert config["plas"] == RetentionConfig()
    assert config["fcfs+retain"] == plugin
    (point,) = [p for p in plan(parse(*argv)) if p.policy == "fcfs+retain"]
    assert make_policy(point.policy, point.policy_config).name == "fcfs"
