"""The sweep's plan: the default grids, the flags that change them, and bad arguments."""

from __future__ import annotations

import argparse

import pytest

from proxy.sim.bench import add_bench_arguments
from proxy.sim.sweep import plan, policy_configs, split_names


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="autellix bench")
    add_bench_arguments(parser)
    return parser.parse_args(list(argv))


def test_quick_plan_is_small_and_full_plan_covers_the_grid() -> None:
    quick = plan(parse("--quick"))
    full = plan(parse())
    assert len(quick) == 4 * 4 * 4
    assert len(full) == 4 * 5 * 10
    assert {p.policy for p in full} == {"fcfs", "mlfq", "plas", "atlas", "srpt"}
    faster = plan(parse("--preset", "llama31-8b-h100", "--engines", "2"))
    assert faster[0].rate > 2 * full[0].rate  # the default grid follows the engines' speed


def test_given_rates_and_settings_reach_every_point() -> None:
    points = plan(
        parse("--workloads", "react", "--policies", "fcfs,plas", "--rates", "2,1",
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
