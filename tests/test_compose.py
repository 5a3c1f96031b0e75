"""docker-compose.yml: every profile validates with docker-compose, and each profile, taken on
its own, is a whole deployment (no dependency on a service the profile leaves out, one front
door, a proxy wired to engines that the profile runs, a healthcheck on /ready)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("sim", "vllm", "sglang", "scale")
# The service clients talk to in each profile (the proxy, or nginx in front of replicas).
FRONT = {"sim": "proxy", "vllm": "proxy-vllm", "sglang": "proxy-sglang", "scale": "nginx"}

needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose is not installed"
)


def compose_config(profile: str) -> dict[str, Any]:
    env = {**os.environ, "COMPOSE_PROFILES": profile}
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", profile, "config"],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    config: dict[str, Any] = yaml.safe_load(out.stdout)
    return config


def active(config: dict[str, Any], profile: str) -> dict[str, dict[str, Any]]:
    # docker-compose v1's `config` prints every service; the profile's selection is computed
    # here by the rule compose applies: no `profiles` key means always on.
    return {
        name: svc
        for name, svc in config["services"].items()
        if not svc.get("profiles") or profile in svc["profiles"]
    }


def test_no_obsolete_version_key() -> None:
    raw = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "version" not in raw


def test_default_profile_is_sim() -> None:
    env_lines = (ROOT / ".env").read_text().splitlines()
    assert "COMPOSE_PROFILES=sim" in env_lines


@needs_compose
@pytest.mark.parametrize("profile", PROFILES)
def test_profile_is_a_whole_deployment(profile: str) -> None:
    services = active(compose_config(profile), profile)
    for name, svc in services.items():
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{profile}: {name} depends on {dep}, not in the profile"
    # One front door on the proxy's port, plus Prometheus and Grafana.
    published = {
        name
        for name, svc in services.items()
        for port in svc.get("ports", [])
        if str(port.get("target") if isinstance(port, dict) else port).endswith("8000")
    }
    assert published == {FRONT[profile]}
    assert {"prometheus", "grafana"} <= services.keys()
    proxies = [s for s in services.values() if "AUTELLIX_ENGINES" in s.get("environment", {})]
    assert proxies
    for svc in proxies:
        assert "/ready" in " ".join(svc["healthcheck"]["test"])
        for engine in json.loads(svc["environment"]["AUTELLIX_ENGINES"]):
            host = engine["url"].split("//")[1].split(":")[0]
            assert host in services, f"{profile}: engine {host} is not in the profile"


@needs_compose
def test_vllm_runs_the_plugin_with_priority_and_kv_events() -> None:
    services = active(compose_config("vllm"), "vllm")
    command = " ".join(services["vllm"]["command"])
    assert "--scheduler-cls=proxy.backends.vllm_plugin.scheduler.AutellixScheduler" in command
    assert "--scheduling-policy=priority" in command
    assert "enable_kv_cache_events" in command
    (engine,) = json.loads(services["proxy-vllm"]["environment"]["AUTELLIX_ENGINES"])
    assert engine["scheduler_plugin"] is True
    assert engine["control_url"] == "tcp://vllm:5599"
    # The proxy reads the engine's KV events and hashes prompts with the engine's algorithm.
    assert engine["kv_events_url"] == "tcp://vllm:5557"
    assert "tcp://*:5557" in command
    assert f"--prefix-caching-hash-algo={engine['kv_hash_algo']}" in command
    assert "PYTHONHASHSEED" not in services["vllm"]["environment"]
    # The plug-in binds where the proxy pushes, under the engine-side prefix.
    assert services["vllm"]["environment"]["AUTELLIX_PLUGIN_CONTROL_ADDR"] == "tcp://0.0.0.0:5599"


@needs_compose
def test_sglang_runs_with_priority_scheduling() -> None:
    services = active(compose_config("sglang"), "sglang")
    assert "--enable-priority-scheduling" in services["sglang"]["command"]
    (engine,) = json.loads(services["proxy-sglang"]["environment"]["AUTELLIX_ENGINES"])
    assert engine["kind"] == "sglang"
    assert engine["priority"] is True


@needs_compose
def test_model_and_gpu_come_from_the_environment() -> None:
    env = {**os.environ, "MODEL": "org/some-model", "GPU_DEVICE": "3"}
    out = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "--profile", "vllm", "config"],
        capture_output=True, text=True, timeout=60, check=False, env=env, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    vllm = yaml.safe_load(out.stdout)["services"]["vllm"]
    assert "--model=org/some-model" in vllm["command"]
    (device,) = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device["device_ids"] == ["3"]
