"""The engine side's edges: its settings (environment) and policy, the proxy's tags on each
request (``vllm_xargs``), the control channel and the record of what it scheduled. Whatever
comes from outside is parsed here into plain values or rejected with a reason; nothing blocks.

Control channel. vLLM takes a request's priority only at submission; the proxy learns more
later (a program's other calls finish on other engines, a starving call is promoted). It pushes
that over ZeroMQ: the engine binds a PULL socket and the scheduler drains it without blocking
once per step, so the channel adds no thread and no latency to the engine loop. PUSH/PULL
rather than PUB/SUB: messages sent before the engine is up, or while it is busy, queue instead
of being dropped. Each message is one frame, a JSON or msgpack object:
``{"program": id, "service": float}`` (the program's attained service; applies to all of its
queued and running calls) or ``{"call": id, "level": int}`` (an explicit level for one call).

Record. Tests and operators need to know what the engine did, not what a client saw (on a
loaded machine client timing says little), so every decision is an event kept in a bounded
buffer and, if ``AUTELLIX_PLUGIN_SCHED_LOG`` names a file, appended to it as JSON lines, flushed at
the end of each scheduler call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from proxy.backends.vllm_plugin.queue import CallTags
from proxy.core.cost import ServiceCost
from proxy.errors import ConfigError
from proxy.policies.base import Policy
from proxy.policies.levels import DEFAULT_BETA, LevelsConfig
from proxy.policies.registry import PolicyRegistry

MAX_PER_POLL = 1024  # bounds one step's work if the proxy floods the channel
# The plug-in's own prefix, apart from the proxy's AUTELLIX_* settings; the earlier
# AUTELLIX_<NAME> still works (proxy/backends/plugin_env.py lists both for the proxy side).
ENV_PREFIX = "AUTELLIX_PLUGIN_"
LEGACY_ENV_PREFIX = "AUTELLIX_"
DEFAULT_POLICY = "plas"
DEFAULT_MIN_QUANTUM_TOKENS = 8
DEFAULT_LOG_MAX = 10_000


# The request's vllm_xargs keys, as the proxy's vLLM adapter writes them.
XARG_PROGRAM = "autellix_program"
XARG_THREAD = "autellix_thread"
XARG_CALL = "autellix_call"
XARG_SERVICE = "autellix_service"
XARG_LEVEL = "autellix_level"
XARG_KEYS = (XARG_PROGRAM, XARG_THREAD, XARG_CALL, XARG_SERVICE, XARG_LEVEL)


def parse_tags(extra: object, request_id: str) -> tuple[CallTags, list[str]]:
    """The request's tags, and what was wrong with them. Never raises: a request that names no
    program (a client that bypassed the proxy) or names it badly becomes a program of its own
    with no service, so it is served, and the problems are for the caller to log."""
    problems: list[str] = []
    if extra is None:
        args: Mapping[object, object] = {}
    elif isinstance(extra, Mapping):
        args = extra
    else:
        args, problems = {}, ["extra_args is not a mapping"]

    def text(key: str) -> str | None:
        value = args.get(key)
        if value is None or (value == "" and key == XARG_THREAD):  # a call may have no thread
            return None
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
        problems.append(f"{key} must be a non-empty string")
        return None

    service = args.get(XARG_SERVICE, 0.0)
    if isinstance(service, str):
        with contextlib.suppress(ValueError):
            service = float(service)
    if isinstance(service, bool) or not isinstance(service, int | float):
        problems.append(f"{XARG_SERVICE} must be a number")
        service = 0.0
    elif not (math.isfinite(service) and service >= 0):
        problems.append(f"{XARG_SERVICE} must be finite and >= 0")
        service = 0.0

    level = args.get(XARG_LEVEL)
    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or level < 0):
        problems.append(f"{XARG_LEVEL} must be an integer >= 0")
        level = None

    program = text(XARG_PROGRAM)
    if program is None and any(k in args for k in XARG_KEYS):
        problems.append(f"{XARG_PROGRAM} is missing")
    tags = CallTags(
        program=program if program is not None else f"request:{request_id}",
        call=text(XARG_CALL) or request_id,
        thread=text(XARG_THREAD) or "",
        service=float(service),
        level=level if isinstance(level, int) else None,
    )
    return tags, problems


@dataclass(frozen=True, slots=True)
class PluginSettings:
    """The plug-in's settings, from ``AUTELLIX_PLUGIN_*`` environment variables (vLLM passes a
    scheduler class no settings of its own). Keep ``policy`` and ``levels`` the same as the
    proxy's, so both sides put a call in the same level."""

    policy: str = DEFAULT_POLICY  # a policy registry name, or package.module:Class
    levels: LevelsConfig = field(default_factory=LevelsConfig)
    cost: ServiceCost = field(default_factory=ServiceCost)
    # A running call is preempted only after this many new tokens since its last admission:
    # each admission pays a re-prefill, so it must buy some progress (and no livelock).
    min_quantum_tokens: int = DEFAULT_MIN_QUANTUM_TOKENS
    preempt: bool = True
    control_addr: str | None = None
    log_path: str | None = None
    log_max: int = DEFAULT_LOG_MAX  # events kept in memory

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> PluginSettings:
        """Settings from the environment; ``ValueError`` naming the variable when one is bad,
        so a misconfigured engine refuses to start rather than scheduling by surprise."""

        def var(name: str) -> str:
            # The variable a setting is read from: the plug-in's prefix, else the old name.
            new = ENV_PREFIX + name
            old = LEGACY_ENV_PREFIX + name
            return old if env.get(new, "").strip() == "" and env.get(old, "").strip() else new

        def get(name: str) -> str | None:
            value = env.get(var(name), "").strip()
            return value or None

        def number(name: str, default: float, *, positive: bool = True) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                value = math.nan
            if not math.isfinite(value) or value < 0 or (positive and value == 0):
                kind = "a positive" if positive else "a non-negative"
                raise ValueError(f"{var(name)}={raw!r}: must be {kind} number")
            return value

        def integer(name: str, default: int, *, least: int) -> int:
            raw = get(name)
            if raw is None:
                return default
            if not raw.isdigit() or int(raw) < least:
                raise ValueError(f"{var(name)}={raw!r}: must be an integer >= {least}")
            return int(raw)

        base, cost = LevelsConfig(), ServiceCost()
        beta_raw = get("BETA")
        preempt = (get("PREEMPT") or "1").lower()
        if preempt not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"{var('PREEMPT')}={preempt!r}: must be a boolean")
        try:
            levels = LevelsConfig(
                levels=integer("LEVELS", base.levels, least=1),
                first=number("LEVEL_FIRST", base.first),
                growth=number("LEVEL_GROWTH", base.growth),
                beta=None if beta_raw in ("none", "off") else number("BETA", DEFAULT_BETA),
            )
        except ValueError as exc:
            raise ValueError(f"bad {ENV_PREFIX}LEVEL* / BETA setting: {exc}") from exc
        return cls(
            policy=get("POLICY") or DEFAULT_POLICY,
            levels=levels,
            cost=ServiceCost(
                decode_token_s=number("DECODE_TOKEN_S", cost.decode_token_s),
                prefill_token_s=number("PREFILL_TOKEN_S", cost.prefill_token_s, positive=False),
            ),
            min_quantum_tokens=integer("MIN_QUANTUM_TOKENS", DEFAULT_MIN_QUANTUM_TOKENS, least=0),
            preempt=preempt in ("1", "true", "yes", "on"),
            control_addr=get("CONTROL_ADDR"),
            log_path=get("SCHED_LOG"),
            log_max=integer("SCHED_LOG_MAX", DEFAULT_LOG_MAX, least=1),
        )


def make_policy(name: str, levels: LevelsConfig) -> Policy:
    """The policy ``name`` from the registry, given the multi-level settings if its Config
    takes them (MLFQ, PLAS, ATLAS); ``ConfigError`` for an unknown, malformed or clairvoyant
    one (the engine, like the live proxy, cannot know a call's remaining work)."""
    registry = PolicyRegistry()
    config_cls = getattr(registry.load_class(name), "Config", None)
    settings: dict[str, object] = {}
    if isinstance(config_cls, type) and issubclass(config_cls, LevelsConfig):
        settings = {f.name: getattr(levels, f.name) for f in dataclasses.fields(LevelsConfig)}
    policy = registry.create(name, settings)
    if not policy.live_ok:
        raise ConfigError(f"policy {name!r} needs an oracle and cannot run in an engine")
    return policy


class EventRecord:
    """Scheduling events: the last ``maxlen`` in memory, all of them in the file if any."""

    def __init__(self, path: str | None, *, maxlen: int) -> None:
        self.events: deque[dict[str, object]] = deque(maxlen=maxlen)
        self._pending: list[bytes] = []
        self._file: IO[bytes] | None = open(path, "ab") if path else None  # noqa: SIM115

    def add(self, event: dict[str, object]) -> None:
        self.events.append(event)
        if self._file is not None:
            self._pending.append(orjson.dumps(event) + b"\n")

    def flush(self) -> None:
        if self._file is not None and self._pending:
            self._file.write(b"".join(self._pending))
            self._file.flush()
            self._pending.clear()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True, slots=True)
class ProgramService:
    program: str
    service: float


@dataclass(frozen=True, slots=True)
class CallLevel:
    call: str
    level: int


Message = ProgramService | CallLevel


def _decode(raw: bytes) -> object:
    if raw.lstrip()[:1] == b"{":
        return orjson.loads(raw)
    try:  # msgspec ships with vLLM; plain msgpack where it does not
        from msgspec import msgpack  # type: ignore[import-not-found, unused-ignore]

        return msgpack.decode(raw)
    except ImportError:
        import msgpack as plain  # type: ignore[import-not-found, unused-ignore]

        return plain.unpackb(raw)


def parse_message(raw: bytes) -> Message:
    """One control message; ``ValueError`` naming what is wrong with it."""
    try:
        obj = _decode(raw)
    except ImportError as exc:
        raise ValueError("not JSON, and no msgpack decoder is installed") from exc
    except Exception as exc:  # the decoders raise their own types; all mean "undecodable"
        raise ValueError(f"undecodable message: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError("a control message must be an object")
    if set(obj) == {"program", "service"}:
        program, service = obj["program"], obj["service"]
        if not isinstance(program, str) or not program:
            raise ValueError("program must be a non-empty string")
        if isinstance(service, bool) or not isinstance(service, int | float):
            raise ValueError("service must be a number")
        if not (math.isfinite(service) and service >= 0):
            raise ValueError("service must be finite and >= 0")
        return ProgramService(program, float(service))
    if set(obj) == {"call", "level"}:
        call, level = obj["call"], obj["level"]
        if not isinstance(call, str) or not call:
            raise ValueError("call must be a non-empty string")
        if isinstance(level, bool) or not isinstance(level, int) or level < 0:
            raise ValueError("level must be an integer >= 0")
        return CallLevel(call, level)
    raise ValueError(
        f"unknown control message with keys {sorted(map(str, obj))}; "
        'expected {"program", "service"} or {"call", "level"}'
    )


def _zmq() -> Any:
    try:
        import zmq  # type: ignore[import-not-found, unused-ignore]
    except ImportError as exc:  # pragma: no cover - pyzmq ships with vLLM
        raise RuntimeError(
            "AUTELLIX_PLUGIN_CONTROL_ADDR is set but pyzmq is not installed (pip install pyzmq)"
        ) from exc
    return zmq


class ControlReceiver:
    """A bound PULL socket, drained without blocking."""

    def __init__(self, address: str, *, max_per_poll: int = MAX_PER_POLL) -> None:
        zmq = self._zmq = _zmq()
        self.address = address
        self.max_per_poll = max_per_poll
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PULL)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self._socket.bind(address)
        except zmq.ZMQError as exc:
            self.close()
            raise RuntimeError(
                f"cannot bind the Autellix control channel at {address}: {exc}"
            ) from exc

    def poll(self) -> tuple[list[Message], list[str]]:
        """The messages waiting now, and a reason for each one that was rejected."""
        messages: list[Message] = []
        errors: list[str] = []
        for _ in range(self.max_per_poll):
            try:
                raw = self._socket.recv(self._zmq.NOBLOCK)
            except self._zmq.Again:
                break
            try:
                messages.append(parse_message(raw))
            except ValueError as exc:
                errors.append(str(exc))
        return messages, errors

    def close(self) -> None:
        self._socket.close(linger=0)
        self._context.term()
