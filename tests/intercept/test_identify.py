"""Identification sources, their precedence, validation of explicit fields, tenants."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict

from proxy.errors import BadRequest
from proxy.intercept.identify import Identifier, IdentifyConfig, strip_program

KEY = b"k" * 32
TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"
CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def ident() -> Identifier:
    return Identifier(IdentifyConfig(hash_key=KEY, id_prefix="t"))


def test_explicit_header(ident: Identifier) -> None:
    got = ident.identify(
        {
            "X-Program-Id": "agent-1",
            "X-Thread-Id": "worker-2",
            "X-Parent-Call-Ids": "call-a, call-b",
            "X-Program-End": "TRUE",
        },
        CHAT,
    )
    assert (got.program_id, got.source) == ("anonymous/agent-1", "explicit")
    assert (got.thread, got.parents, got.end, got.tenant) == (
        "worker-2",
        ("call-a", "call-b"),
        True,
        "anonymous",
    )
    assert got.conversation is None  # explicit programs need no inference record


def test_explicit_body_and_strip(ident: Identifier) -> None:
    body = {**CHAT, "program": {"id": "run-7", "thread": "t1", "parents": ["c1"], "end": False}}
    got = ident.identify({}, body)
    assert (got.program_id, got.source, got.thread, got.parents, got.end) == (
        "anonymous/run-7",
        "explicit",
        "t1",
        ("c1",),
        False,
    )
    stripped = strip_program(body)
    assert "program" not in stripped
    assert "program" in body  # the client's dict is not changed
    assert stripped["messages"] is body["messages"]
    assert strip_program(CHAT) is CHAT


def test_headers_win_over_body_field_by_field(ident: Identifier) -> None:
    body = {**CHAT, "program": {"id": "from-body", "thread": "body-thread", "end": True}}
    got = ident.identify({"X-Program-Id": "from-header", "X-Program-End": "false"}, body)
    assert (got.program_id, got.thread, got.end) == ("anonymous/from-header", "body-thread", False)


def test_null_program_is_absent(ident: Identifier) -> None:
    assert ident.identify({}, {**CHAT, "program": None}).source == "new"


def test_thread_and_end_apply_to_other_sources(ident: Identifier) -> None:
    got = ident.identify({"x-session-id": "s1", "X-Thread-Id": "th", "X-Program-End": "1"}, CHAT)
    assert (got.source, got.thread, got.end) == ("session", "th", True)
    got = ident.identify({"X-Parent-Call-Ids": ""}, CHAT)
    assert (got.source, got.parents) == ("new", ())


@pytest.mark.parametrize(
    ("headers", "body", "param"),
    [
        ({}, {"program": "agent"}, "program"),
        ({}, {"program": ["agent"]}, "program"),
        ({}, {"program": {"id": "a", "parent": ["x"]}}, "program.parent"),
        ({}, {"program": {"id": ""}}, "program.id"),
        ({}, {"program": {"id": 7}}, "program.id"),
        ({}, {"program": {"id": "x" * 129}}, "program.id"),
        ({}, {"program": {"id": "has space"}}, "program.id"),
        ({}, {"program": {"thread": "é"}}, "program.thread"),
        ({}, {"program": {"parents": "c1,c2"}}, "program.parents"),
        ({}, {"program": {"parents": ["c1", 2]}}, "program.parents"),
        ({}, {"program": {"parents": [f"c{i}" for i in range(65)]}}, "program.parents"),
        ({}, {"program": {"end": "true"}}, "program.end"),
        ({}, {"program": {"end": 1}}, "program.end"),
        ({"X-Program-Id": ""}, {}, "X-Program-Id"),
        ({"X-Program-Id": "a b"}, {}, "X-Program-Id"),
        ({"X-Thread-Id": "x" * 200}, {}, "X-Thread-Id"),
        ({"X-Parent-Call-Ids": "a,,b"}, {}, "X-Parent-Call-Ids"),
        ({"X-Program-End": "yes please"}, {}, "X-Program-End"),
    ],
)
def test_bad_explicit_values(
    ident: Identifier, headers: dict[str, str], body: dict[str, Any], param: str
) -> None:
    with pytest.raises(BadRequest) as info:
        ident.identify(headers, {**CHAT, **body})
    assert info.value.param == param
    assert param in info.value.message


@pytest.mark.parametrize(
    "header",
    [
        "x-claude-code-session-id",
        "session-id",
        "session_id",
        "x-session-affinity",
        "X-Session-Id",
        "X-Dynamo-Session-ID",
        "x-smg-routing-key",
    ],
)
def test_session_headers(ident: Identifier, header: str) -> None:
    got = ident.identify({header: " 2f1e-sess "}, CHAT)
    assert got.source == "session"
    assert got.program_id.startswith("anonymous/session:")
    assert "2f1e" not in got.program_id
    # The same session from another tool is the same program; another session is not.
    assert ident.identify({"x-session-id": "2f1e-sess"}, CHAT).program_id == got.program_id
    assert ident.identify({header: "other"}, CHAT).program_id != got.program_id


def test_first_configured_session_header_wins(ident: Identifier) -> None:
    both = ident.identify({"x-session-id": "b", "x-claude-code-session-id": "a"}, CHAT)
    assert both.program_id == ident.identify({"x-claude-code-session-id": "a"}, CHAT).program_id
    assert ident.identify({"x-session-id": "  "}, CHAT).source == "new"


def test_traceparent(ident: Identifier) -> None:
    got = ident.identify({"traceparent": TRACEPARENT}, CHAT)
    assert got.source == "session"
    assert got.program_id.startswith("anonymous/trace:")
    assert TRACE not in got.program_id
    other_span = f"00-{TRACE}-00f067aa0ba902b7-00"
    assert ident.identify({"traceparent": other_span}, CHAT).program_id == got.program_id
    future = f"cc-{TRACE}-b7ad6b7169203331-01-what-comes-later"
    assert ident.identify({"traceparent": future}, CHAT).program_id == got.program_id
    # A session header is the agent's own word; it wins over a trace.
    assert ident.identify({"traceparent": TRACEPARENT, "session_id": "s"}, CHAT).program_id != (
        got.program_id
    )


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"ff-{TRACE}-b7ad6b7169203331-01",
        f"00-{'0' * 32}-b7ad6b7169203331-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE.upper()}-b7ad6b7169203331-01",
        f"00-{TRACE}-b7ad6b7169203331-01-extra",
        f"00-{TRACE[:-1]}-b7ad6b7169203331-01",
        f"0-{TRACE}-b7ad6b7169203331-01",
    ],
)
def test_invalid_traceparent_is_ignored(ident: Identifier, value: str) -> None:
    assert ident.identify({"traceparent": value}, CHAT).source == "new"


def test_traceparent_can_be_turned_off() -> None:
    ident = Identifier(IdentifyConfig(use_traceparent=False))
    assert ident.identify({"traceparent": TRACEPARENT}, CHAT).source == "new"


@pytest.mark.parametrize(
    "field",
    [
        {"prompt_cache_key": "conv-1"},
        {"safety_identifier": "conv-1"},
        {"user": "conv-1"},
        {"metadata": {"session_id": "conv-1"}},
    ],
)
def test_body_fields(ident: Identifier, field: dict[str, Any]) -> None:
    body = {**CHAT, **field}
    got = ident.identify({}, body)
    assert got.source == "body"
    assert got.program_id.startswith("anonymous/body:")
    assert "conv-1" not in got.program_id
    assert body == {**CHAT, **field}  # forwarded unchanged
    assert ident.identify({}, body).program_id == got.program_id


def test_body_field_order_and_types(ident: Identifier) -> None:
    email = {**CHAT, "user": "alice@example.com"}
    got = ident.identify({}, email)
    assert "alice" not in got.program_id
    assert "example" not in got.program_id
    # metadata.session_id comes first: a session is finer than an end user.
    both = ident.identify({}, {**email, "metadata": {"session_id": "s"}})
    assert (
        both.program_id == ident.identify({}, {**CHAT, "metadata": {"session_id": "s"}}).program_id
    )
    assert both.program_id != got.program_id
    # The same value in two fields names two programs.
    as_key = ident.identify({}, {**CHAT, "prompt_cache_key": "alice@example.com"})
    assert as_key.program_id != got.program_id
    # Values that are not non-empty strings are not names.
    for bad in ({"user": 3}, {"user": ""}, {"metadata": "s"}, {"metadata": {"session_id": 1}}):
        assert ident.identify({}, {**CHAT, **bad}).source == "new"


def test_body_fields_are_configurable() -> None:
    ident = Identifier(IdentifyConfig(body_fields=("metadata.run",)))
    assert ident.identify({}, {**CHAT, "user": "u"}).source == "new"
    assert ident.identify({}, {**CHAT, "metadata": {"run": "r"}}).source == "body"


def test_precedence(ident: Identifier) -> None:
    first = ident.identify({}, CHAT)
    reply = {"role": "assistant", "content": "hello"}
    ident.record_reply(first, reply)
    follow = {**CHAT, "messages": [*CHAT["messages"], reply, {"role": "user", "content": "more"}]}
    layers: list[tuple[dict[str, str], dict[str, Any]]] = [
        ({}, follow),
        ({}, {**follow, "user": "u"}),
        ({"x-session-id": "s"}, {**follow, "user": "u"}),
        ({"x-session-id": "s", "X-Program-Id": "p"}, {**follow, "user": "u"}),
    ]
    sources = [ident.identify(h, b).source for h, b in layers]
    assert sources == ["inferred", "body", "session", "explicit"]
    assert ident.identify({}, follow).program_id == first.program_id


def test_new_programs_and_ids() -> None:
    a, b = Identifier(), Identifier()
    ids_a = {a.identify({}, CHAT).program_id for _ in range(100)}
    assert len(ids_a) == 100
    assert all(i.startswith("anonymous/p-") for i in ids_a)
    assert ids_a.isdisjoint({b.identify({}, CHAT).program_id for _ in range(100)})
    got = a.identify({}, {"model": "m", "prompt": "x"})
    assert (got.source, got.conversation) == ("new", None)


def test_tenants(ident: Identifier) -> None:
    secret = "sk-live-123456"
    alice = ident.identify({"Authorization": f"Bearer {secret}", "x-session-id": "s"}, CHAT)
    bob = ident.identify({"Authorization": "Bearer sk-other", "x-session-id": "s"}, CHAT)
    anon = ident.identify({"x-session-id": "s"}, CHAT)
    assert alice.tenant.startswith("k-")
    assert secret not in alice.tenant
    assert secret not in alice.program_id
    assert len({alice.tenant, bob.tenant, anon.tenant}) == 3
    assert anon.tenant == "anonymous"
    # The same session or explicit id under two tenants is two programs.
    assert len({alice.program_id, bob.program_id, anon.program_id}) == 3
    explicit = ident.identify({"Authorization": f"Bearer {secret}", "X-Program-Id": "a"}, CHAT)
    assert explicit.program_id == f"{alice.tenant}/a"
    assert ident.identify({"Authorization": "Basic abc"}, CHAT).tenant == "anonymous"


def test_tenant_names_are_per_instance_unless_keyed() -> None:
    auth = {"Authorization": "Bearer sk-1"}
    keyed = [Identifier(IdentifyConfig(hash_key=KEY)).identify(auth, CHAT) for _ in range(2)]
    assert keyed[0].tenant == keyed[1].tenant
    assert Identifier().identify(auth, CHAT).tenant != Identifier().identify(auth, CHAT).tenant


def test_tenant_header() -> None:
    ident = Identifier(IdentifyConfig(tenant_header="X-Tenant"))
    auth = {"Authorization": "Bearer sk-1"}
    assert ident.identify({**auth, "x-tenant": "acme"}, CHAT).tenant == "acme"
    assert ident.identify(auth, CHAT).tenant.startswith("k-")
    for bad in ("a/b", "", "x" * 65, "has space"):
        with pytest.raises(BadRequest) as info:
            ident.identify({"X-Tenant": bad}, CHAT)
        assert info.value.param == "X-Tenant"


def test_accepts_aiohttp_style_headers(ident: Identifier) -> None:
    headers = CIMultiDict({"x-program-id": "a"})
    assert ident.identify(headers, CHAT).program_id == "anonymous/a"


def test_inference_can_be_turned_off() -> None:
    ident = Identifier(IdentifyConfig(infer=False))
    first = ident.identify({}, CHAT)
    assert first.conversation is None
    reply = {"role": "assistant", "content": "x"}
    ident.record_reply(first, reply)
    follow = {**CHAT, "messages": [*CHAT["messages"], reply, {"role": "user", "content": "y"}]}
    assert ident.identify({}, follow).source == "new"
    assert len(ident.prefixes) == 0


def test_unhashable_messages_are_new(ident: Identifier) -> None:
    got = ident.identify({}, {"model": "m", "messages": ["not an object"]})
    assert (got.source, got.conversation) == ("new", None)
    ident.record_reply(got, {"role": "assistant", "content": "x"})
    assert len(ident.prefixes) == 0


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="hash key"):
        Identifier(IdentifyConfig(hash_key=b"short"))
    with pytest.raises(ValueError, match="capacity"):
        Identifier(IdentifyConfig(prefix_capacity=0))


def test_an_id_the_proxy_handed_out_comes_back_unchanged() -> None:
    """Clients pass X-Program-Id on as they got it; it must name the same program, and a
    tenant must not reach another tenant's program by naming it."""
    ident = Identifier()
    first = ident.identify({}, CHAT)
    again = ident.identify({"X-Program-Id": first.program_id}, CHAT)
    assert (again.program_id, again.source) == (first.program_id, "explicit")
    other = ident.identify(
        {"X-Program-Id": first.program_id, "Authorization": "Bearer sk-other"}, CHAT
    )
    assert other.program_id != first.program_id
    assert other.program_id.endswith("/" + first.program_id)
