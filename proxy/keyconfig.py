"""Configuration of client keys and of the pass-through allowlist (see docs/security.md)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

# Tenant names appear in program ids as "<tenant>/<id>": visible ASCII without "/".
TENANT_PATTERN = r"^[\x21-\x2e\x30-\x7e]{1,64}$"

# The pass-through forwards these /v1 routes only ("*" matches one path segment, a trailing
# "/**" any rest): the OpenAI API's, never an engine's private ones.
DEFAULT_PASSTHROUGH = (
    "embeddings",
    "models/*",
    "responses",
    "responses/*",
    "responses/*/cancel",
    "responses/*/input_items",
    "moderations",
    "audio/**",
)


class ApiKeyConfig(BaseModel):
    """One client key. Every call made with it belongs to ``tenant``."""

    model_config = ConfigDict(extra="forbid")

    key: SecretStr = Field(
        description="The key clients send as 'Authorization: Bearer <key>', or 'sha256:<hex>' "
        "of it, so the config need not hold it in clear."
    )
    tenant: str = Field(pattern=TENANT_PATTERN, description="The tenant its calls belong to.")
    admin: bool = Field(
        default=False, description="May list, read and delete every tenant's programs."
    )
    weight: float = Field(
        default=1.0,
        gt=0,
        le=1e6,
        description="The tenant's share of engines relative to others when they compete "
        "(attained service is divided by it).",
    )
    engine_control: bool = Field(
        default=False,
        description="May send engine scheduling fields (priority, vllm_xargs, rid, request ids, "
        "priority headers) through to engines; they are stripped for other keys.",
    )

    @field_validator("key")
    @classmethod
    def _key_form(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw.startswith("sha256:"):
            digest = raw.removeprefix("sha256:")
            if len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest):
                raise ValueError("a sha256: key must be followed by 64 hex digits")
        elif not raw or not raw.isascii() or not raw.isprintable() or " " in raw:
            raise ValueError("a key must be visible ASCII without spaces")
        return value
