"""Reading the configuration: a file (YAML, TOML or JSON), the environment and CLI flags,
merged in that order of precedence over the defaults and validated by ``proxy.config``'s
models, with a bad value reported by the dotted path of its field.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from proxy.backends.plugin_env import is_plugin_variable
from proxy.config import ProxyConfig
from proxy.errors import ConfigError

ENV_PREFIX = "AUTELLIX_"


def format_validation_error(
    err: ValidationError, source: str, *, within: tuple[str, ...] = ()
) -> str:
    """Every bad value, each naming the dotted path of its field (under ``within``), on one
    line, so that it reads whole in a container's log and in a terminal alike."""
    problems = []
    for item in err.errors():
        where = ".".join(str(part) for part in (*within, *item["loc"])) or "(root)"
        problems.append(f"{where}: {item['msg']}")
    return f"invalid configuration ({source}): " + "; ".join(problems)


class YamlError(ValueError):
    """PyYAML's error, as ``load_yaml`` raises it (its message is PyYAML's)."""


def load_yaml(text: str) -> Any:
    """``yaml.safe_load``. PyYAML is imported when a YAML file is read, not before: a proxy
    configured by flags or environment never holds it (about 1 MiB resident)."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise YamlError(str(exc)) from exc


class TomlError(ValueError):
    """tomllib's error, as ``load_toml`` raises it (its message is tomllib's)."""


def load_toml(text: str) -> Any:
    """``tomllib.loads``, imported when a TOML file is read (about 0.1 MiB resident)."""
    import tomllib

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlError(str(exc)) from exc


def read_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file into a plain dict."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
    try:
        if p.suffix == ".toml":
            data: Any = load_toml(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            data = load_yaml(text)
    except (TomlError, json.JSONDecodeError, YamlError) as exc:
        raise ConfigError(
            f"config file {p} is not valid {p.suffix.lstrip('.') or 'YAML'}: {exc}"
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping at its top level")
    return data


def _parse_env_value(raw: str) -> Any:
    # JSON first so lists, numbers and booleans work; anything else is a plain string.
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """``AUTELLIX_PORT=9000`` -> {"port": 9000}; ``AUTELLIX_SIM__TIME_SCALE=0.1`` nests."""
    out: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        if is_plugin_variable(key):  # the engine-side plug-in's, not the proxy's
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {key} conflicts with another one")
        node[path[-1]] = _parse_env_value(raw)
    return out


def merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge mappings; lists and scalars in ``top`` replace those in ``base``."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ProxyConfig:
    """Build the configuration from all sources. ``environ`` defaults to ``os.environ``;
    ``AUTELLIX_CONFIG`` names a file when ``path`` is not given."""
    env = os.environ if environ is None else environ
    path = path or env.get(ENV_PREFIX + "CONFIG")
    data: dict[str, Any] = read_file(path) if path else {}
    data = merge(data, from_env(env))
    data = merge(data, overrides or {})
    try:
        return ProxyConfig.model_validate(data)
    except ValidationError as exc:
        source = f"file {path}, environment and flags" if path else "environment and flags"
        raise ConfigError(format_validation_error(exc, source)) from exc


def parse_engine_flag(value: str) -> dict[str, Any]:
    """``--engine`` takes JSON or ``name=url[,kind=K][,models=a|b]``."""
    value = value.strip()
    if value.startswith("{"):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--engine {value!r}: not valid JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise ConfigError(f"--engine {value!r}: must be a JSON object")
        return parsed
    head, _, rest = value.partition(",")
    name, sep, url = head.partition("=")
    if not sep or not name or not url:
        raise ConfigError(f"--engine {value!r}: expected NAME=URL[,kind=K][,models=a|b]")
    out: dict[str, Any] = {"name": name, "url": url}
    for item in filter(None, rest.split(",")):
        key, sep, val = item.partition("=")
        if not sep:
            raise ConfigError(f"--engine {value!r}: option {item!r} is not KEY=VALUE")
        out[key] = val.split("|") if key == "models" else val
    return out
