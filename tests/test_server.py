"""The embedded engine's starter: the ``sim`` settings it checks and the service weights it
derives from the simulated engine's cost model."""

from __future__ import annotations

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
