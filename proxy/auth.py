"""Client keys: who may call the proxy, and which tenant each call belongs to.

Keys are kept only as SHA-256 digests, in a table built once at start-up. A request costs one
digest of the key it presents and one dict lookup; the final equality is ``compare_digest``.
The client cannot steer the digest of its guess bit by bit, so the lookup leaks nothing that
would let it find a key faster than by brute force.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from proxy.config import ProxyConfig
from proxy.configfile import YamlError, load_yaml
from proxy.errors import ConfigError, Unauthorized
from proxy.keyconfig import ApiKeyConfig

log = logging.getLogger("autellix.auth")

# Probes and scrapers must work without a key: they carry no client data.
OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})


@dataclass(frozen=True, slots=True)
class Principal:
    """The holder of a key, as the request path sees it."""

    tenant: str
    admin: bool = False
    weight: float = 1.0
    engine_control: bool = False


PRINCIPAL = web.RequestKey("autellix_principal", Principal)


def _digest_of(entry: ApiKeyConfig) -> bytes:
    raw = entry.key.get_secret_value()
    if raw.startswith("sha256:"):
        return bytes.fromhex(raw.removeprefix("sha256:"))
    return hashlib.sha256(raw.encode()).digest()


class KeyTable:
    """Digest -> principal, built once. Empty means the proxy runs open."""

    __slots__ = ("_by_digest", "weights")

    def __init__(self, keys: list[ApiKeyConfig]) -> None:
        self._by_digest: dict[bytes, tuple[bytes, Principal]] = {}
        weights: dict[str, float] = {}
        for entry in keys:
            digest = _digest_of(entry)
            if digest in self._by_digest:
                raise ConfigError(f"api_keys: the key of tenant {entry.tenant!r} is listed twice")
            known = weights.setdefault(entry.tenant, entry.weight)
            if known != entry.weight:
                raise ConfigError(
                    f"api_keys: tenant {entry.tenant!r} has keys with different weights"
                )
            principal = Principal(entry.tenant, entry.admin, entry.weight, entry.engine_control)
            self._by_digest[digest] = (digest, principal)
        self.weights = weights

    def __bool__(self) -> bool:
        return bool(self._by_digest)

    def lookup(self, token: str) -> Principal | None:
        try:
            digest = hashlib.sha256(token.encode()).digest()
        except UnicodeEncodeError:  # undecodable bytes in the header: not any configured key
            return None
        found = self._by_digest.get(digest)
        if found is None or not hmac.compare_digest(found[0], digest):
            return None
        return found[1]


def load_keys(config: ProxyConfig) -> list[ApiKeyConfig]:
    """``api_keys`` plus those in ``api_keys_file`` (a YAML or JSON list, or a mapping with an
    ``api_keys`` list)."""
    keys = list(config.api_keys)
    if config.api_keys_file is None:
        return keys
    path = Path(config.api_keys_file)
    try:
        text = path.read_text(encoding="utf-8")
        data: Any = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except OSError as exc:
        raise ConfigError(f"cannot read api_keys_file {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, YamlError) as exc:
        raise ConfigError(f"api_keys_file {path} is not valid YAML or JSON: {exc}") from exc
    if isinstance(data, dict):
        data = data.get("api_keys")
    try:
        keys.extend(TypeAdapter(list[ApiKeyConfig]).validate_python(data))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"api_keys_file {path}: {where}: {first['msg']}") from exc
    return keys


def bearer_token(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("Authorization")
    if auth is None:
        return None
    scheme, _, token = auth.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(table: KeyTable, headers: Mapping[str, str]) -> Principal:
    """The holder of the configured key the request presents, or 401 (checked by the edge on
    every route but ``OPEN_PATHS``, when keys exist)."""
    token = bearer_token(headers)
    if token is None:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key"
        )
    principal = table.lookup(token)
    if principal is None:
        raise Unauthorized("incorrect API key provided", code="invalid_api_key")
    return principal


def warn_if_open(config: ProxyConfig, table: KeyTable) -> None:
    """An open proxy on a public address lets anyone use (and steer) the engines."""
    if table or _loopback(config.host):
        return
    log.warning(
        "no api_keys are configured and the proxy listens on %s, beyond loopback: anyone who "
        "can reach it can use the engines and see and end every program (see docs/security.md)",
        config.host,
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def principal_of(request: web.Request) -> Principal | None:
    """The key holder; None when the proxy runs open."""
    return request.get(PRINCIPAL)
