"""What start-up checks before anything runs, and the settings it reports once it does.

A config that validates field by field can still name a policy that does not exist, settings
the policy does not take, or a backend class that cannot be loaded. Those are found here,
before the embedded engine or the server starts, and reported like a bad field: one line,
naming it (``policy``, ``policy_config``, ``engines.0.kind``, ...).
"""

from __future__ import annotations

import importlib.util
import os
from types import SimpleNamespace

from proxy.backends.registry import make_backend
from proxy.config import ProxyConfig
from proxy.core.concurrency import CapConfig, CapMode, for_policy
from proxy.errors import ConfigError
from proxy.policies.registry import PolicyRegistry


def _bad(field: str, exc: Exception) -> ConfigError:
    return ConfigError(f"invalid configuration: {field}: {exc}")


def check_config(config: ProxyConfig) -> None:
    """Raise ``ConfigError`` naming the field when ``config`` cannot be started."""
    registry = PolicyRegistry()
    try:
        registry.load_class(config.policy)
    except ConfigError as exc:
        raise _bad("policy", exc) from None
    try:
        policy = registry.create(config.policy, config.policy_config)
    except ConfigError as exc:
        raise _bad("policy_config", exc) from None
    if not policy.live_ok:
        raise _bad(
            "policy",
            ConfigError(
                f"{config.policy!r} is clairvoyant: it needs the true remaining work of calls, "
                "which only the simulator knows (autellix bench)"
            ),
        )
    for i, engine in enumerate(config.engines):
        try:
            make_backend(engine)
        except ConfigError as exc:
            raise _bad(f"engines.{i}.kind", exc) from None
        if engine.control_url is not None and importlib.util.find_spec("zmq") is None:
            raise _bad(
                f"engines.{i}.control_url",
                ConfigError("needs pyzmq: pip install 'autellix-proxy[plugin]'"),
            )
    if config.trace_file is not None:
        folder = os.path.dirname(os.path.abspath(config.trace_file))
        if not os.access(folder, os.W_OK):
            raise _bad("trace_file", ConfigError(f"cannot write in {folder}"))


def describe_settings(config: ProxyConfig) -> str:
    """One line with the effective settings, for the start-up log."""
    policy = config.policy
    if config.policy_config:
        policy += " " + ",".join(f"{k}={v}" for k, v in sorted(config.policy_config.items()))
    gate = config.gate
    engines = "; ".join(
        f"{e.name} ({e.kind}, {e.url}, max_inflight={e.max_inflight or 'none'}"
        f"{', plug-in' if e.scheduler_plugin else ''})"
        for e in config.engines
    )
    return (
        f"settings: policy {policy}; gate preempt={gate.preempt} margin={gate.preempt_margin} "
        f"min_quantum_s={gate.min_quantum_s} adaptive={gate.adaptive} {_cap(config)}; "
        f"service unit {config.programs.service_unit}; idle_ttl_s={config.programs.idle_ttl_s}; "
        f"access log {'on' if config.access_log else 'off'}; "
        f"trace {config.trace_file or 'off'}; engines: {engines}"
    )


def _cap(config: ProxyConfig) -> str:
    """The admission cap as configured and, for "auto", what it becomes for the policy (the
    gate resolves it the same way, ``for_policy``, by the policy's name)."""
    gate = config.gate
    text = f"cap={gate.cap}"
    if gate.cap == "auto":
        # Resolved per engine by how it declares its eviction (``EngineConfig.kv_evict``).
        named = SimpleNamespace(name=config.policy)
        modes: dict[CapMode, list[str]] = {}
        for engine in config.engines:
            retains = engine.kv_evict == "rank"
            mode = for_policy(CapConfig(mode="auto"), named, retains=retains).mode
            modes.setdefault(mode, []).append(engine.name)
        if len(modes) > 1:
            where = "; ".join(f"{mode} on {', '.join(names)}" for mode, names in modes.items())
            text += f" ({config.policy}: {where})"
        else:
            mode = next(iter(modes), for_policy(CapConfig(mode="auto"), named).mode)
            text += f" ({mode} for {config.policy})"
    return f"{text} cap_k={gate.cap_k if gate.cap_k is not None else 'unset'}"
