"""Configuration: one validated object built from defaults, a file, the environment and CLI flags.

Precedence, lowest to highest: field defaults < config file (YAML, TOML or JSON) <
environment variables (``AUTELLIX_<FIELD>``, nested with ``__``) < command-line flags.
Every source is validated by the same pydantic models here (``proxy.configfile`` reads and
merges the sources), and a bad value is reported with the dotted path of the field that holds it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from proxy.keyconfig import DEFAULT_PASSTHROUGH, ApiKeyConfig
from proxy.kvhints.settings import RoutingSettings

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
    priority: bool | None = Field(
        default=None,
        description="Send each call's priority in the engine's own field (the engine must run "
        "with priority scheduling: vLLM --scheduling-policy priority, SGLang "
        "--enable-priority-scheduling). None: on for sim, off for the others.",
    )
    priority_polarity: Literal["lower-first", "higher-first"] | None = Field(
        default=None,
        description="Which priority values the engine serves first. None: the kind's default "
        "(vLLM and sim lower-first, SGLang higher-first; flip for SGLang started with "
        "--schedule-low-priority-values-first).",
    )
    kv_evict: Literal["lru", "rank"] = Field(
        default="lru",
        description="How the engine's prefix cache evicts: lru (stock vLLM and SGLang) or rank "
        "(the engine runs autellix's vLLM plug-in with AUTELLIX_PLUGIN_KV_EVICT=rank). The gate's "
        "auto cap turns on for plas only on rank engines (docs/gate.md, 'Admission cap').",
    )
    scheduler_plugin: bool = Field(
        default=False,
        description="The engine runs autellix's scheduler plug-in: send program, thread and "
        "service with each call (vLLM: vllm_xargs) for it to schedule by.",
    )
    first_byte_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Longest wait for the engine's answer to begin once the call was sent (time "
        "held in the proxy's own queue does not count). A non-streamed answer begins only when "
        "it is complete, hence the generous default.",
    )
    idle_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Longest silence inside an answer that has begun (between stream chunks).",
    )
    eject_after: int = Field(
        default=3,
        ge=1,
        description="Consecutive failed calls (unreachable, timed out, broken or garbled answers) "
        "after which the engine gets no calls until its health check passes again.",
    )
    control_url: str | None = Field(
        default=None,
        description="The plug-in's control address (its AUTELLIX_PLUGIN_CONTROL_ADDR, e.g. "
        "tcp://10.0.0.5:5599): programs' service updates are pushed there as calls finish, so "
        "the engine ranks queued calls by their program's latest service. Needs pyzmq.",
    )

    kv_events_url: str | None = Field(
        default=None,
        description="Where the engine publishes its KV cache events (vLLM --kv-events-config "
        "endpoint, e.g. tcp://10.0.0.5:5557): the prefix index learns its blocks from them. "
        "Needs pyzmq and msgpack (extra 'kvevents').",
    )
    kv_hash_algo: Literal["sha256", "sha256_cbor", "none"] = Field(
        default="sha256",
        description="vLLM with kv_events_url: the engine's --prefix-caching-hash-algo. After "
        "each call the proxy asks the engine's /tokenize for the prompt's tokens and hashes "
        "them as the engine does, so the follow-up is matched against the blocks the engine's "
        "events say it holds (docs/routing.md). 'none': only clear entries from events.",
    )
    kv_hash_seed: str | None = Field(
        default=None,
        description="The engine's PYTHONHASHSEED, if it sets one (it seeds vLLM's block hashes).",
    )

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in BUILTIN_KINDS and ":" not in value:
            raise ValueError(
                f"unknown kind {value!r}; use one of {', '.join(BUILTIN_KINDS)} or package.module:Class"
            )
        return value

    @field_validator("control_url", "kv_events_url")
    @classmethod
    def _zmq_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("tcp://", "ipc://")):
            raise ValueError("must start with tcp:// or ipc://")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/").removesuffix("/v1")


class ProgramsConfig(BaseModel):
    """How calls are matched to programs, and how long the process table remembers them."""

    model_config = ConfigDict(extra="forbid")

    session_headers: list[str] | None = Field(
        default=None,
        description="Headers naming an agent session, tried in order (None: the built-in list "
        "of popular agent tools' headers).",
    )
    use_traceparent: bool = Field(
        default=True,
        description="A W3C traceparent's trace id names the program (one trace per run).",
    )
    body_fields: list[str] | None = Field(
        default=None,
        description="Body fields naming a session or end user, dotted for nested ones, tried in "
        "order (None: metadata.session_id, prompt_cache_key, safety_identifier, user).",
    )
    infer: bool = Field(
        default=True, description="Group chat calls that resend a conversation the proxy answered."
    )
    prefix_capacity: int = Field(
        default=200_000, ge=1, description="Most served replies the inference index remembers."
    )
    tenant_header: str | None = Field(
        default=None,
        description="Header naming the tenant, trusted as it comes: set it only when a gateway "
        "that sets or strips it is the proxy's only client. Else the tenant comes from the "
        "client's key (api_keys), or with no keys configured from a hash of its bearer token.",
    )
    hash_key: SecretStr | None = Field(
        default=None,
        description="Secret (16 to 64 bytes) for hashing session values and open-mode bearer "
        "tokens into ids. None: random per start, so those names change at every restart.",
    )
    service_unit: Literal["tokens-cost", "wall"] = Field(
        default="tokens-cost",
        description="tokens-cost: engine seconds estimated from tokens (the same whatever the "
        "engine's load); wall: seconds from first to last streamed token.",
    )
    decode_token_s: float | None = Field(
        default=None,
        gt=0,
        description="Service of one generated token (None: one decode step of the simulated "
        "engine's cost model at a batch of 32, filled in when the proxy starts).",
    )
    prefill_token_s: float | None = Field(
        default=None,
        gt=0,
        description="Service of one prompt token (None: from the simulated engine's cost model, "
        "filled in when the proxy starts).",
    )
    idle_ttl_s: float = Field(
        default=600.0, ge=0, description="Forget a program this long after its last call ended."
    )
    max_programs: int = Field(default=1_000_000, ge=1, description="Most programs remembered.")
    collect_interval_s: float = Field(
        default=15.0, gt=0, description="How often idle programs are looked for and forgotten."
    )

    @field_validator("hash_key")
    @classmethod
    def _hash_key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not 16 <= len(value.get_secret_value().encode()) <= 64:
            raise ValueError("must be 16 to 64 bytes")
        return value


class GateSettings(BaseModel):
    """The proxy-side priority gate (see docs/gate.md). It holds calls only in front of
    engines with ``max_inflight`` set, or all engines when ``adaptive`` is on."""

    model_config = ConfigDict(extra="forbid")

    preempt: bool = Field(
        default=True,
        description="Preempt a running streamed call for a waiting one that outranks it, and "
        "resume it later where it stopped.",
    )
    preempt_margin: int = Field(
        default=1, ge=1, description="Levels by which a waiting call must outrank a running one."
    )
    min_quantum_s: float = Field(
        default=0.5, ge=0, description="A call runs at least this long before it can be preempted."
    )
    adaptive: bool = Field(
        default=False,
        description="Hold calls back while an engine reports requests waiting in its own queue.",
    )
    cap: Literal["auto", "off", "fixed", "adaptive"] = Field(
        default="auto",
        description="Admission cap per engine (docs/gate.md, 'Admission cap'): at most k calls "
        "run on an engine, the policy's best; better waiting calls preempt worse running ones. "
        "fixed: k is cap_k; adaptive: a Vegas-style controller moves k from the engine's "
        "tokens/s and the calls waiting; off: max_inflight only; auto: adaptive for the "
        "policies it measurably helps (plas on engines with kv_evict rank), off for the others.",
    )
    cap_k: int | None = Field(
        default=None,
        ge=1,
        description="The fixed cap, or where the adaptive one starts (default: max_inflight, "
        "else 256).",
    )

    @model_validator(mode="after")
    def _fixed_cap_has_k(self) -> GateSettings:
        if self.cap == "fixed" and self.cap_k is None:
            raise ValueError("gate.cap fixed needs gate.cap_k")
        return self


class ProxyConfig(BaseModel):
    """Everything the proxy needs to start. Every field can come from file, env or flag."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on (0: any free).")
    engines: list[EngineConfig] = Field(
        default_factory=list,
        description="Engines behind the proxy. Empty: an embedded simulated engine is started.",
    )
    # A plain mapping so that the proxy does not import the simulator to read its config: the
    # embedded engine's starter (proxy.server) checks it against SimEngineConfig.
    sim: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of the embedded simulated engine (SimEngineConfig's fields, "
        "docs/sim-engine.md; used only when engines is empty, and by the default service "
        "weights).",
    )
    policy: str = Field(
        default="plas",
        description="Scheduling policy: fcfs, las, mlfq, plas, atlas, a package.module:Class "
        "path or an entry point in group autellix.policies.",
    )
    policy_config: dict[str, Any] = Field(
        default_factory=dict, description="Settings of the policy (its typed config's fields)."
    )
    programs: ProgramsConfig = Field(
        default_factory=ProgramsConfig, description="Program identification and the process table."
    )
    gate: GateSettings = Field(
        default_factory=GateSettings, description="The proxy-side priority gate and preemption."
    )
    routing: RoutingSettings = Field(
        default_factory=RoutingSettings,
        description="Balancer, prefix index and circuit breaker (docs/routing.md).",
    )
    forward_client_auth: bool = Field(
        default=False,
        description="Forward the client's Authorization header to engines instead of each "
        "engine's api_key.",
    )
    api_keys: list[ApiKeyConfig] = Field(
        default_factory=list,
        description="Client keys. When any is configured (here or in api_keys_file), every "
        "route but /health, /ready and /metrics needs one. Empty: the proxy runs open.",
    )
    api_keys_file: str | None = Field(
        default=None,
        description="A YAML or JSON file holding a list of api_keys entries (added to api_keys).",
    )
    passthrough_routes: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PASSTHROUGH),
        description="/v1 routes forwarded to engines as they are, relative to /v1; '*' matches "
        "one path segment, a trailing '/**' any rest. Everything else under /v1 is 404.",
    )
    shutdown_grace_s: float = Field(
        default=30.0,
        ge=0,
        description="On SIGTERM: stop accepting, let calls finish for this long, then end the "
        "streams still open with an error event.",
    )
    trace_file: str | None = Field(
        default=None,
        description="Append every finished call to this JSON-lines trace, to replay real "
        "programs in the simulator against any policy (docs/simulator.md). Off by default.",
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
    access_log: bool = Field(
        default=False,
        description="Log one line per generation call on the autellix.access logger: program, "
        "level, engine, status, tokens and times.",
    )

    @field_validator("sim", mode="before")
    @classmethod
    def _sim_settings(cls, value: Any) -> Any:
        # Callers may pass a SimEngineConfig; keep only what they set, as a file would.
        if isinstance(value, BaseModel):
            return value.model_dump(exclude_unset=True)
        return value

    @field_validator("engines")
    @classmethod
    def _unique_names(cls, engines: list[EngineConfig]) -> list[EngineConfig]:
        names = [e.name for e in engines]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"engine names must be unique; repeated: {', '.join(dupes)}")
        return engines
