"""Start-up checks: what a valid-looking config can still get wrong is reported as one line
naming the field, before anything starts."""

from __future__ import annotations

import pytest

from proxy.config import EngineConfig, GateSettings, ProxyConfig
from proxy.errors import ConfigError
from proxy.preflight import check_config, describe_settings


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (ProxyConfig(policy="nope"), "policy: unknown policy 'nope'"),
        (ProxyConfig(policy="srpt"), "policy: 'srpt' is clairvoyant"),
        (ProxyConfig(policy="no.such.module:Policy"), "policy: "),
        (ProxyConfig(policy_config={"betta": 3}), "policy_config: policy 'plas': unknown setting"),
        (ProxyConfig(policy_config={"beta": "high"}), "policy_config: "),
        (
            ProxyConfig(engines=[EngineConfig(name="a", url="http://x", kind="no.such:Backend")]),
            "engines.0.kind: ",
        ),
        (ProxyConfig(trace_file="/no/such/folder/trace.jsonl"), "trace_file: cannot write"),
    ],
)
def test_what_cannot_start_is_named(config: ProxyConfig, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_config(config)
    message = str(info.value)
    assert message.startswith(f"invalid configuration: {field}"), message
    assert "\n" not in message


def test_a_good_config_passes() -> None:
    check_config(ProxyConfig(policy="atlas", policy_config={"beta": None}))


def test_settings_line_says_what_runs() -> None:
    config = ProxyConfig(
        policy="mlfq",
        policy_config={"levels": 4},
        gate=GateSettings(adaptive=True),
        engines=[
            EngineConfig(name="gpu0", url="http://10.0.0.5:8000", kind="vllm", max_inflight=8)
        ],
        access_log=True,
    )
    line = describe_settings(config)
    assert "\n" not in line
    for part in ("policy mlfq levels=4", "adaptive=True", "preempt=True",
                 "gpu0 (vllm, http://10.0.0.5:8000, max_inflight=8)", "access log on"):  # fmt: skip
        assert part in line, part


def test_settings_line_shows_the_admission_cap() -> None:
    engine = EngineConfig(name="e", url="http://e", max_inflight=8)
    fixed = ProxyConfig(gate=GateSettings(cap="fixed", cap_k=6), engines=[engine])
    assert "cap=fixed cap_k=6" in describe_settings(fixed)
    # "auto" says what it becomes for the policy, as the gate resolves it.
    auto = ProxyConfig(policy="srpt", engines=[engine])
    assert "cap=auto (adaptive for srpt) cap_k=unset" in describe_settings(auto)
    plas = ProxyConfig(policy="plas", gate=GateSettings(cap_k=12), engines=[engine])
    assert "cap=auto (off for plas) cap_k=12" in describe_settings(plas)
    # An engine that evicts by rank (the plug-in with retention) gets the cap under plas.
    ranked = EngineConfig(name="r", url="http://r", kv_evict="rank")
    mixed = ProxyConfig(policy="plas", engines=[engine, ranked])
    assert "cap=auto (plas: off on e; adaptive on r)" in describe_settings(mixed)
    only_ranked = ProxyConfig(policy="plas", engines=[ranked])
    assert "cap=auto (adaptive for plas)" in describe_settings(only_ranked)
