"""The embedded engine's starter: the ``sim`` settings it checks and the service weights it
derives from the simulated engine's cost model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from proxy.app import create_app
from proxy.config import ProgramsConfig, ProxyConfig
from proxy.errors import ConfigError
from proxy.server import resolve, sim_engine_config
from proxy.sim.engine.config import SimEngineConfig
from proxy.sim.engine.cost import PRESETS


def test_unset_weights_come_from_the_configured_cost_model() -> None:
    config = resolve(ProxyConfig(sim={"cost_preset": "llama31-8b-h100"}))
    prefill, decode = PRESETS["llama31-8b-h100"]().service_weights()
    assert config.programs.decode_token_s == decode
    assert config.programs.prefill_token_s == prefill
    a100 = resolve(ProxyConfig()).programs
    assert a100.decode_token_s != decode  # the preset matters
    assert (a100.prefill_token_s, a100.decode_token_s) == PRESETS[
        "llama31-8b-a100"
    ]().service_weights()
    # No sim settings: the weights of the settings' defaults, read without checking them.
    default = SimEngineConfig().cost_model().service_weights()
    assert (a100.prefill_token_s, a100.decode_token_s) == default


def test_weights_that_are_set_are_kept() -> None:
    programs = ProgramsConfig(decode_token_s=0.5)
    config = resolve(ProxyConfig(programs=programs))
    assert config.programs.decode_token_s == 0.5
    assert config.programs.prefill_token_s == PRESETS["llama31-8b-a100"]().service_weights()[0]


def test_bad_sim_settings_name_their_field() -> None:
    with pytest.raises(ConfigError, match=r"sim\.time_scale"):
        resolve(ProxyConfig(sim={"time_scale": 0}))
    with pytest.raises(ConfigError, match=r"sim\.bogus"):
        sim_engine_config(ProxyConfig(sim={"bogus": 1}))


def test_sim_settings_given_as_a_model_keep_what_was_set() -> None:
    config = ProxyConfig(sim=SimEngineConfig(time_scale=0.25))
    assert config.sim == {"time_scale": 0.25}
    assert sim_engine_config(config) == SimEngineConfig(time_scale=0.25)


def test_the_app_refuses_a_config_whose_weights_were_never_resolved() -> None:
    with pytest.raises(ConfigError, match="decode_token_s"):
        create_app(ProxyConfig())
    create_app(resolve(ProxyConfig()))


# A proxy in front of a real engine, started and stopped as `autellix serve` does it: what it
# must not have imported (each is memory the proxy does not need).
_STARTED_PROXY = """
import asyncio, sys
from proxy.cli import build_parser, effective_config
from proxy.server import start_proxy

async def main():
    args = build_parser().parse_args(
        ["serve", "--port", "0", "--engine", "e=http://127.0.0.1:9", "--log-level", "error"]
    )
    proxy = await start_proxy(effective_config(args))
    await proxy.stop()

asyncio.run(main())
print(" ".join(sorted(sys.modules)))
"""


def test_a_proxy_in_front_of_real_engines_leaves_unused_parts_unimported() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _STARTED_PROXY], capture_output=True, text=True, check=True
    )
    loaded = set(out.stdout.split())
    assert "proxy.app" in loaded  # the proxy did start
    unused = {
        "prometheus_client",  # until /metrics is scraped
        "proxy.sim.engine.config",  # no sim settings to check
        "proxy.sim.engine.engine",
        "tomllib",  # no TOML file to read
    }
    assert loaded & unused == set()
