"""Which tenant a call belongs to: a hash of its API key, or a header a gateway sets.

API keys are never kept in clear: the tenant name is a keyed BLAKE2b of the key, truncated.
The key is per instance unless configured, so a leaked tenant name cannot be checked against
a list of candidate keys elsewhere.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from proxy.errors import BadRequest

DEFAULT_TENANT = "anonymous"

# Program ids of explicit programs are "<tenant>/<id>", so a tenant name must not hold a "/".
_TENANT = re.compile(r"^[\x21-\x2e\x30-\x7e]{1,64}$")


class TenantResolver:
    """Names the tenant of a call from its headers.

    ``header``: a header that names the tenant (set by a trusted gateway in front of the
    proxy); it wins over the API key when present. Otherwise the bearer token of
    ``Authorization`` is hashed with ``key``. Otherwise the tenant is ``default``.
    """

    __slots__ = ("_default", "_header", "_key")

    def __init__(
        self, *, key: bytes, header: str | None = None, default: str = DEFAULT_TENANT
    ) -> None:
        if not 16 <= len(key) <= 64:
            raise ValueError("the tenant hash key must be 16 to 64 bytes")
        self._key = key
        self._header = header
        self._default = default

    def tenant_of(self, headers: Mapping[str, str], known: str | None = None) -> str:
        """``known``: the tenant of the client's key, when keys are configured; only the
        trusted header overrides it."""
        if self._header is not None:
            named = headers.get(self._header)
            if named is not None:
                named = named.strip()
                if not _TENANT.match(named):
                    raise BadRequest(
                        f"header {self._header} must be 1 to 64 visible ASCII characters "
                        "without spaces or '/'",
                        param=self._header,
                    )
                return named
        if known is not None:
            return known
        auth = headers.get("Authorization")
        if auth is not None:
            scheme, _, token = auth.strip().partition(" ")
            token = token.strip()
            if scheme.lower() == "bearer" and token:
                return self.hash_key(token)
        return self._default

    def hash_key(self, api_key: str) -> str:
        # surrogateescape: a token with bytes that are not UTF-8 still names one tenant.
        raw = api_key.encode(errors="surrogateescape")
        digest = hashlib.blake2b(raw, key=self._key, digest_size=8)
        return "k-" + digest.hexdigest()
