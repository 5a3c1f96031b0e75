"""Which program, thread and parent calls a call belongs to.

Sources, first hit wins (``docs/identification.md`` gives the reasons):

1. explicit: ``X-Program-Id`` (or ``program.id`` in the body);
2. session: a session header of a popular agent tool, or the trace id of ``traceparent``;
3. body: an OpenAI body field naming a session or end user (``prompt_cache_key``, ...);
4. inferred: the chat messages continue a conversation whose reply the proxy served;
5. new: none of those; the call starts a program of its own.

Thread, parents and the end mark are explicit only, and apply whichever source names the
program. Values from sources 2 and 3 are hashed with the tenant, so they never appear in
clear, never collide with each other or with other tenants' programs.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.errors import BadRequest
from proxy.ids import IdGen
from proxy.intercept.prefix import Conversation, PrefixIndex, Unhashable
from proxy.intercept.tenant import DEFAULT_TENANT, TenantResolver

Source = Literal["explicit", "session", "body", "inferred", "new"]

_ID = re.compile(r"^[\x21-\x7e]+$")
_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})
_PROGRAM_KEYS = frozenset({"id", "thread", "parents", "end"})


@dataclass(frozen=True, slots=True)
class IdentifyConfig:
    """How calls are matched to programs.

    ``session_headers``: headers whose value names an agent session, tried in order.
    ``use_traceparent``: take a valid W3C ``traceparent``'s trace id as the session (one trace
    per agent run). Turn off for clients that start a new trace on every call.
    ``body_fields``: body fields (dotted for nested objects) naming a session or end user,
    tried in order; they are forwarded unchanged.
    ``infer``: match chat calls to the conversation whose reply the proxy served.
    ``prefix_capacity``: most replies the inference index remembers (LRU).
    ``max_id_length``: longest program, thread or parent call id accepted.
    ``max_parents``: most parent call ids one call may name.
    ``tenant_header``: header naming the tenant (else the hashed API key, else "anonymous").
    ``hash_key``: key for hashing API keys and session values; random per instance when
    None. Set it to get the same tenant names across restarts and replicas.
    ``id_prefix``: prefix of new program ids; random per instance when None.
    """

    session_headers: tuple[str, ...] = (
        "x-claude-code-session-id",
        "session-id",
        "session_id",
        "x-session-affinity",
        "x-session-id",
        "x-dynamo-session-id",
        "x-smg-routing-key",
    )
    use_traceparent: bool = True
    body_fields: tuple[str, ...] = (
        "metadata.session_id",
        "prompt_cache_key",
        "safety_identifier",
        "user",
    )
    infer: bool = True
    prefix_capacity: int = 200_000
    max_id_length: int = 128
    max_parents: int = 64
    tenant_header: str | None = None
    hash_key: bytes | None = None
    id_prefix: str | None = None


@dataclass(frozen=True, slots=True)
class Identity:
    """What a call was identified as. ``conversation`` is its chat messages as the inference
    index saw them, kept only where its reply must be recorded for inference (sources "new"
    and "inferred")."""

    program_id: str
    source: Source
    tenant: str = DEFAULT_TENANT
    thread: str = ""
    parents: tuple[str, ...] = ()
    end: bool = False
    conversation: Conversation | None = None


@dataclass(slots=True)
class _Explicit:
    program: str | None = None
    thread: str | None = None
    parents: tuple[str, ...] | None = None
    end: bool | None = None


def strip_program(body: dict[str, Any]) -> dict[str, Any]:
    """The body to send to an engine: without the proxy's own ``program`` object. The
    client's dict is left as it is; a copy is made only when there is something to drop."""
    if "program" not in body:
        return body
    return {k: v for k, v in body.items() if k != "program"}


class Identifier:
    """Identifies calls (``identify``) and learns conversations from replies
    (``record_reply``). One per proxy instance; holds the inference index."""

    __slots__ = ("_body_paths", "_ids", "_key", "config", "prefixes", "tenants")

    def __init__(self, config: IdentifyConfig | None = None) -> None:
        self.config = config or IdentifyConfig()
        self._key = self.config.hash_key or secrets.token_bytes(32)
        self._ids = IdGen(self.config.id_prefix or secrets.token_hex(4))
        self.tenants = TenantResolver(key=self._key, header=self.config.tenant_header)
        self.prefixes = PrefixIndex(self.config.prefix_capacity)
        self._body_paths = tuple((f, tuple(f.split("."))) for f in self.config.body_fields)

    def identify(
        self,
        headers: Mapping[str, str],
        body: Mapping[str, Any],
        raw: bytes | None = None,
        *,
        tenant: str | None = None,
    ) -> Identity:
        """Identify one call from its headers (case-insensitive, as aiohttp gives them) and
        its parsed JSON body (``raw``: the bytes it was parsed from, which make recognising a
        known conversation cheaper). ``tenant``: the tenant of the client's key, if keys are
        configured. Raises ``BadRequest`` naming a bad header or field."""
        if not isinstance(headers, CIMultiDict | CIMultiDictProxy):
            headers = CIMultiDict(headers)
        tenant = self.tenants.tenant_of(headers, tenant)
        given = self._explicit(headers, body)
        source: Source
        conversation = None
        if given.program is not None:
            program_id, source = given.program, "explicit"
        elif (session := self._session(tenant, headers)) is not None:
            program_id, source = session, "session"
        elif (named := self._body_field(tenant, body)) is not None:
            program_id, source = named, "body"
        else:
            found, conversation = self._infer(tenant, body, raw)
            if found is not None:
                program_id, source = found, "inferred"
            else:
                program_id, source = self._ids.next("p"), "new"
        # Every id is scoped by its tenant, so one tenant cannot reach another's programs;
        # an id the proxy handed out (X-Program-Id) is taken back as it is.
        if not program_id.startswith(tenant + "/"):
            program_id = f"{tenant}/{program_id}"
        return Identity(
            program_id=program_id,
            source=source,
            tenant=tenant,
            thread=given.thread or "",
            parents=given.parents or (),
            end=bool(given.end),
            conversation=conversation,
        )

    def record_reply(self, identity: Identity, assistant_message: Mapping[str, Any]) -> None:
        """Call when a chat call completed well, with the assistant message it produced
        (content and tool_calls), so that the program's next call is recognised."""
        if identity.conversation is not None:
            self.prefixes.learn(identity.conversation, assistant_message, identity.program_id)

    def hash_value(self, tenant: str, kind: str, value: str) -> str:
        digest = hashlib.blake2b(
            f"{tenant}\0{kind}\0{value}".encode(errors="surrogateescape"),
            key=self._key,
            digest_size=12,
        )
        return digest.hexdigest()

    # -- sources -------------------------------------------------------------------------

    def _check_id(self, value: object, name: str) -> str:
        if isinstance(value, str) and len(value) <= self.config.max_id_length and _ID.match(value):
            return value
        raise BadRequest(
            f"{name} must be 1 to {self.config.max_id_length} visible ASCII characters "
            "without spaces",
            param=name,
        )

    def _parents(self, values: list[object], name: str) -> tuple[str, ...]:
        if len(values) > self.config.max_parents:
            raise BadRequest(
                f"{name} names {len(values)} parent calls; at most {self.config.max_parents}",
                param=name,
            )
        return tuple(self._check_id(v, name) for v in values)

    def _explicit(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> _Explicit:
        out = _Explicit()
        program = body.get("program")
        if program is not None:
            if not isinstance(program, dict):
                raise BadRequest("program must be an object", param="program")
            unknown = sorted(set(program) - _PROGRAM_KEYS)
            if unknown:
                raise BadRequest(
                    f"unknown field(s) {', '.join('program.' + k for k in unknown)}; "
                    "program takes id, thread, parents, end",
                    param=f"program.{unknown[0]}",
                )
            if program.get("id") is not None:
                out.program = self._check_id(program["id"], "program.id")
            if program.get("thread") is not None:
                out.thread = self._check_id(program["thread"], "program.thread")
            if program.get("parents") is not None:
                parents = program["parents"]
                if not isinstance(parents, list):
                    raise BadRequest(
                        "program.parents must be a list of call ids", param="program.parents"
                    )
                out.parents = self._parents(parents, "program.parents")
            if program.get("end") is not None:
                if not isinstance(program["end"], bool):
                    raise BadRequest("program.end must be true or false", param="program.end")
                out.end = program["end"]
        # Headers win over the body field by field: a gateway may add them to an SDK's calls.
        if (value := headers.get("X-Program-Id")) is not None:
            out.program = self._check_id(value.strip(), "X-Program-Id")
        if (value := headers.get("X-Thread-Id")) is not None:
            out.thread = self._check_id(value.strip(), "X-Thread-Id")
        if (value := headers.get("X-Parent-Call-Ids")) is not None:
            items: list[object] = [v.strip() for v in value.split(",")]
            out.parents = () if items == [""] else self._parents(items, "X-Parent-Call-Ids")
        if (value := headers.get("X-Program-End")) is not None:
            flag = value.strip().lower()
            if flag not in _TRUE and flag not in _FALSE:
                raise BadRequest("X-Program-End must be true or false", param="X-Program-End")
            out.end = flag in _TRUE
        return out

    def _session(self, tenant: str, headers: Mapping[str, str]) -> str | None:
        for name in self.config.session_headers:
            value = headers.get(name)
            if value is not None and (value := value.strip()):
                return "session:" + self.hash_value(tenant, "session", value)
        if self.config.use_traceparent and (value := headers.get("traceparent")) is not None:
            trace = _trace_id(value)
            if trace is not None:
                return "trace:" + self.hash_value(tenant, "trace", trace)
        return None

    def _body_field(self, tenant: str, body: Mapping[str, Any]) -> str | None:
        for name, path in self._body_paths:
            node: object = body
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, str) and (node := node.strip()):
                return "body:" + self.hash_value(tenant, name, node)
        return None

    def _infer(
        self, tenant: str, body: Mapping[str, Any], raw: bytes | None
    ) -> tuple[str | None, Conversation | None]:
        messages = body.get("messages")
        if not self.config.infer or not isinstance(messages, list) or not messages:
            return None, None
        try:
            return self.prefixes.find(tenant, messages, raw)
        except Unhashable:
            return None, None


def _trace_id(traceparent: str) -> str | None:
    """The trace id of a valid W3C traceparent; None for anything else (it is then ignored,
    as the Trace Context spec asks of an invalid header)."""
    m = _TRACEPARENT.match(traceparent.strip())
    if m is None:
        return None
    version, trace, parent, _, rest = m.groups()
    if version == "ff" or (version == "00" and rest) or trace == "0" * 32 or parent == "0" * 16:
        return None
    return trace
