"""Configuration: one validated object built from defaults, a file, the environment and CLI flags.

Precedence, lowest to highest: field defaults < config file (YAML, TOML or JSON) <
environment variables (``AUTELLIX_<FIELD>``, nested with ``__``) < command-line flags.
Every source is validated by the same pydantic models, and a bad value is reported with the
dotted path of the field that holds it.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from proxy.errors import ConfigError
from proxy.sim.config import SimEngineConfig

ENV_PREFIX = "AUTELLIX_"

BUILTIN_KINDS = ("vllm", "sglang", "openai", "sim")


class EngineConfig(BaseModel):
    """One inference engine behind the proxy."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=64, description="Unique name, used in logs and metrics."
    )
    url: str = Field(description="Base URL of the engine's OpenAI server, without /v1.")
    kind: str = Field(
        default="openai",
        description="vllm | sglang | openai (any OpenAI-compatible server) | sim (simulated "
        "engine), or package.module:Class for a backend of your own.",
    )
    models: list[str] = Field(
        default_factory=list,
        description="Models it serves. Empty: discovered from the engine's GET /v1/models.",
    )
    api_key: SecretStr | None = Field(
        default=None, description="Sent as 'Authorization: Bearer <key>' to this engine."
    )
    max_inflight: int | None = Field(
        default=None,
        ge=1,
        description="At most this many calls at the engine at once (None: no cap).",
    )
    timeout_s: float = Field(
        default=600.0, gt=0, description="Longest a call may take at this engine, end to end."
    )

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in BUILTIN_KINDS and ":" not in value:
            raise ValueError(
                f"unknown kind {value!r}; use one of {', '.join(BUILTIN_KINDS)} or package.module:Class"
            )
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/").removesuffix("/v1")


class ProxyConfig(BaseModel):
    """Everything the proxy needs to start. Every field can come from file, env or flag."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on (0: any free).")
    engines: list[EngineConfig] = Field(
        default_factory=list,
        description="Engines behind the proxy. Empty: an embedded simulated engine is started.",
    )
    sim: SimEngineConfig = Field(
        default_factory=SimEngineConfig,
        description="Settings of the embedded simulated engine (used only when engines is empty).",
    )
    forward_client_auth: bool = Field(
        default=False,
        description="Forward the client's Authorization header to engines instead of each "
        "engine's api_key.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, description="Largest request body accepted."
    )
    health_interval_s: float = Field(
        default=5.0, gt=0, description="How often engines' health and models are polled."
    )
    connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Time allowed to open a connection to an engine."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("engines")
    @classmethod
    def _unique_names(cls, engines: list[EngineConfig]) -> list[EngineConfig]:
        names = [e.name for e in engines]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"engine names must be unique; repeated: {', '.join(dupes)}")
        return engines


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for item in err.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(root)"
        lines.append(f"  {where}: {item['msg']}")
    return f"invalid configuration ({source}):\n" + "\n".join(lines)


def read_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML, TOML or JSON config file into a plain dict."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from exc
    try:
        if p.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
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
        raise ConfigError(_format_validation_error(exc, source)) from exc


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
