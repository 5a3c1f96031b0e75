"""Inferring programs from resent conversations."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.intercept.identify import Identifier, Identity
from proxy.intercept.prefix import PrefixIndex, Unhashable, canonical

SYSTEM = {"role": "system", "content": "You are a careful agent."}


def tool_reply(call_id: str, city: str) -> dict[str, Any]:
    """What an engine produced: compact JSON arguments, no content."""
    args = orjson.dumps({"city": city, "units": "C"}).decode()
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": "weather", "arguments": args}}
        ],
    }


def echoed(reply: dict[str, Any]) -> dict[str, Any]:
    """The reply as a framework sends it back: arguments re-serialised with spaces, content
    as an empty string, an extra field the engine never sent."""
    out: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
    out["tool_calls"] = [
        {
            "id": c["id"],
            "type": "function",
            "function": {
                "name": c["function"]["name"],
                "arguments": orjson.dumps(
                    orjson.loads(c["function"]["arguments"]), option=orjson.OPT_INDENT_2
                ).decode(),
            },
        }
        for c in reply["tool_calls"]
    ]
    return out


class Agent:
    """A ReAct-style agent that resends its whole conversation on every call."""

    def __init__(self, ident: Identifier, task: str, name: str) -> None:
        self.ident = ident
        self.name = name
        self.messages: list[dict[str, Any]] = [SYSTEM, {"role": "user", "content": task}]
        self.seen: list[Identity] = []

    def step(self, turn: int) -> Identity:
        identity = self.ident.identify({}, {"model": "m", "messages": list(self.messages)})
        self.seen.append(identity)
        reply = tool_reply(f"call_{self.name}_{turn}", f"{self.name}-{turn}")
        self.ident.record_reply(identity, reply)
        self.messages.append(echoed(reply))
        self.messages.append(
            {"role": "tool", "tool_call_id": f"call_{self.name}_{turn}", "content": "21 C"}
        )
        return identity


def test_multi_turn_with_tool_calls() -> None:
    agent = Agent(Identifier(), "weather in three cities?", "a")
    for turn in range(6):
        agent.step(turn)
    first, *rest = agent.seen
    assert first.source == "new"
    assert [i.source for i in rest] == ["inferred"] * 5
    assert {i.program_id for i in agent.seen} == {first.program_id}


def test_concurrent_conversations_stay_separate() -> None:
    ident = Identifier()
    agents = [Agent(ident, f"task {k}", f"a{k}") for k in range(4)]
    for turn in range(5):
        for agent in agents:  # interleaved, as concurrent agents are
            agent.step(turn)
    programs = [{i.program_id for i in agent.seen} for agent in agents]
    assert all(len(p) == 1 for p in programs)
    assert len(set.union(*programs)) == 4


def test_identical_first_turns_diverge_by_reply() -> None:
    ident = Identifier()
    a, b = Agent(ident, "same task", "a"), Agent(ident, "same task", "b")
    for turn in range(3):
        a.step(turn)
        b.step(turn)
    assert [i.source for i in a.seen] == ["new", "inferred", "inferred"]
    assert len({i.program_id for i in a.seen}) == 1
    assert len({i.program_id for i in b.seen}) == 1
    assert a.seen[0].program_id != b.seen[0].program_id


def test_identical_conversations_go_to_the_latest() -> None:
    # With no difference at all the proxy cannot tell them apart; the last served wins.
    index = PrefixIndex()
    messages = [SYSTEM, {"role": "user", "content": "q"}]
    reply = {"role": "assistant", "content": "a"}
    index.add_conversation("t", messages, reply, "p1")
    index.add_conversation("t", messages, reply, "p2")
    assert index.match("t", [*messages, reply])[0] == "p2"


def test_longest_served_prefix_wins() -> None:
    index = PrefixIndex()
    m1 = [SYSTEM, {"role": "user", "content": "q"}]
    r1 = {"role": "assistant", "content": "a1"}
    m2 = [*m1, r1, {"role": "user", "content": "q2"}]
    r2 = {"role": "assistant", "content": "a2"}
    index.add_conversation("t", m1, r1, "parent")
    index.add_conversation("t", m2, r2, "child")
    assert index.match("t", [*m2, r2, {"role": "user", "content": "q3"}])[0] == "child"
    assert index.match("t", [*m1, r1, {"role": "user", "content": "other"}])[0] == "parent"
    # History edited before the last reply: only the unedited prefix still matches.
    edited = [*m1, r1, {"role": "user", "content": "edited"}, r2]
    assert index.match("t", edited)[0] == "parent"
    assert index.match("t", [SYSTEM, {"role": "user", "content": "new"}])[0] is None


def test_match_returns_the_state_to_add_with() -> None:
    index = PrefixIndex()
    messages = [SYSTEM, {"role": "user", "content": "q"}]
    reply = {"role": "assistant", "content": "a"}
    found, state = index.match("t", messages)
    assert found is None
    index.add(state, reply, "p")
    assert index.match("t", [*messages, reply, {"role": "user", "content": "more"}])[0] == "p"


def test_tenants_do_not_share_conversations() -> None:
    index = PrefixIndex()
    messages = [{"role": "user", "content": "q"}]
    reply = {"role": "assistant", "content": "a"}
    index.add_conversation("alice", messages, reply, "p")
    assert index.match("alice", [*messages, reply])[0] == "p"
    assert index.match("bob", [*messages, reply])[0] is None


def test_bounded_memory_evicts_least_recently_used() -> None:
    index = PrefixIndex(capacity=3)
    convs = [[{"role": "user", "content": f"q{k}"}] for k in range(5)]
    reply = {"role": "assistant", "content": "a"}
    for k in range(3):
        index.add_conversation("t", convs[k], reply, f"p{k}")
    assert index.match("t", [*convs[0], reply])[0] == "p0"  # now most recently used
    index.add_conversation("t", convs[3], reply, "p3")
    index.add_conversation("t", convs[4], reply, "p4")
    assert len(index) == 3
    assert index.evicted == 2
    found = {k: index.match("t", [*convs[k], reply])[0] for k in range(5)}
    assert found == {0: "p0", 1: None, 2: None, 3: "p3", 4: "p4"}
    with pytest.raises(ValueError, match="capacity"):
        PrefixIndex(capacity=0)


def test_replies_are_matched_as_clients_send_them_back() -> None:
    engine = {"role": "assistant", "content": "  The answer is 4.\n"}
    as_parts = {"role": "assistant", "content": [{"type": "text", "text": "The answer is 4."}]}
    assert canonical(engine) == canonical(as_parts)
    reply = tool_reply("c1", "Paris")
    assert canonical(reply) == canonical(echoed(reply))
    assert canonical(reply) != canonical(tool_reply("c2", "Paris"))
    assert canonical(reply) != canonical(tool_reply("c1", "Rome"))
    legacy = {"role": "assistant", "function_call": {"name": "f", "arguments": '{"a":1}'}}
    assert canonical(legacy)[4] == ((None, "f", '{"a":1}'),)


def test_messages_differ_by_what_the_model_sees() -> None:
    base = {"role": "tool", "tool_call_id": "c1", "content": "x"}
    variants = [
        {**base, "tool_call_id": "c2"},
        {**base, "role": "user"},
        {**base, "name": "n"},
        {**base, "content": "y"},
        {**base, "content": [{"type": "image_url", "image_url": {"url": "u"}}]},
    ]
    assert len({canonical(m) for m in [base, *variants]}) == len(variants) + 1
    assert canonical({**base, "extra": 1}) == canonical(base)


def test_odd_messages() -> None:
    with pytest.raises(Unhashable):
        canonical("text")
    with pytest.raises(Unhashable):
        canonical({"role": "assistant", "tool_calls": "x"})
    with pytest.raises(Unhashable):
        canonical({"role": "assistant", "tool_calls": ["x"]})
    with pytest.raises(Unhashable):
        canonical({"role": "user", "content": [{"type": "text", "text": 2**70}]})
    # Strange but valid JSON still hashes.
    odd = {"role": 1, "name": ["n"], "content": {"a": 1}, "tool_calls": [{"function": 3}]}
    hash(canonical(odd))
    raw = tool_reply("c", "x")
    raw["tool_calls"][0]["function"]["arguments"] = "{not json"
    assert canonical(raw)[4][0][2] == "{not json"


json_text = st.text(max_size=30)
messages_st = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "tool", "system"]), "content": json_text}
    ),
    min_size=1,
    max_size=8,
)


@given(messages_st, json_text, messages_st)
def test_any_served_conversation_is_found_again(
    messages: list[dict[str, Any]], answer: str, more: list[dict[str, Any]]
) -> None:
    index = PrefixIndex()
    reply = {"role": "assistant", "content": answer}
    index.add_conversation("t", messages, reply, "p")
    assert index.match("t", [*messages, reply, *more])[0] == "p"


def test_a_continued_conversation_is_hashed_from_the_known_state() -> None:
    index = PrefixIndex()
    m1 = [SYSTEM, {"role": "user", "content": "q"}]
    r1 = tool_reply("c1", "Paris")
    found, conv = index.find("t", m1)
    assert found is None
    assert conv.known == 0
    conv.tokens = 42
    index.learn(conv, r1, "p")
    # The client's copy: new objects, equal values; the reply as a framework echoes it.
    m2 = [*orjson.loads(orjson.dumps(m1)), echoed(r1), {"role": "tool", "content": "21 C"}]
    found, conv2 = index.find("t", m2)
    assert (found, conv2.known, conv2.known_tokens) == ("p", 2, 42)
    assert conv2.state == index.match("t", list(m2))[1]  # the same hash as a full pass
    slow = PrefixIndex()
    slow.add_conversation("t", m1, r1, "p")
    assert slow.find("t", m2)[1].state == conv2.state
    # An edited history is not taken on trust: the full pass decides.
    edited = [SYSTEM, {"role": "user", "content": "q, edited"}, *m2[2:]]
    found, conv3 = index.find("t", edited)
    assert found is None
    assert conv3.known == 0


def test_recent_conversations_are_bounded_and_replaced_by_their_continuation() -> None:
    index = PrefixIndex(recent=2)
    convs = []
    for k in range(3):
        _, conv = index.find("t", [{"role": "user", "content": f"q{k}"}])
        index.learn(conv, {"role": "assistant", "content": f"a{k}"}, f"p{k}")
        convs.append(conv)
    assert len(index._tails) == 2
    first = [{"role": "user", "content": "q0"}, {"role": "assistant", "content": "a0"}]
    found, conv = index.find("t", first)
    assert found == "p0"
    assert conv.known == 0
    latest = [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}]
    found, conv = index.find("t", [*latest, {"role": "user", "content": "more"}])
    assert found == "p2"
    assert conv.known == 1
    index.learn(conv, {"role": "assistant", "content": "b2"}, "p2")
    assert len(index._tails) == 2  # the continuation took its place


def _call(index: PrefixIndex, body: dict[str, Any], raw: bytes | None = None) -> Any:
    raw = orjson.dumps(body) if raw is None else raw
    return index.find("t", orjson.loads(raw)["messages"], raw)


def test_the_known_part_is_recognised_by_its_bytes() -> None:
    index = PrefixIndex()
    first = {"model": "m", "messages": [SYSTEM, {"role": "user", "content": "q"}], "n": 1}
    _, conv = _call(index, first)
    index.learn(conv, {"role": "assistant", "content": "a"}, "p")
    second = {**first, "messages": [*first["messages"], {"role": "assistant", "content": "a"}]}
    second["messages"].append({"role": "user", "content": "more"})
    found, conv2 = _call(index, second)
    assert (found, conv2.known, conv2.raw_single) == ("p", 2, True)
    index.learn(conv2, {"role": "assistant", "content": "b"}, "p")
    third = {**second, "messages": [*second["messages"], {"role": "assistant", "content": "b"}]}
    found, conv3 = _call(index, third)
    assert (found, conv3.known, conv3.raw_single) == ("p", 4, True)


def test_a_second_messages_key_is_not_taken_on_the_bytes_alone() -> None:
    index = PrefixIndex()
    first = {"model": "m", "messages": [SYSTEM, {"role": "user", "content": "q"}]}
    _, conv = _call(index, first)
    index.learn(conv, {"role": "assistant", "content": "a"}, "p")
    other = [SYSTEM, {"role": "user", "content": "other"}, {"role": "assistant", "content": "a"}]
    real = [*first["messages"], {"role": "assistant", "content": "a"}]
    # The bytes start like the first body, but a later "messages" key wins the parse.
    raw = orjson.dumps({"model": "m", "messages": real})[:-1] + b',"messages":'
    raw += orjson.dumps(other) + b"}"
    found, conv2 = _call(index, {}, raw)
    assert orjson.loads(raw)["messages"] == other
    assert (found, conv2.raw_single) == (None, False)


def test_bodies_with_arrays_after_the_messages_are_compared_by_value() -> None:
    index = PrefixIndex()
    tools = [{"type": "function", "function": {"name": "f"}}]
    first = {"messages": [SYSTEM, {"role": "user", "content": "q"}], "tools": tools}
    _, conv = _call(index, first)
    index.learn(conv, {"role": "assistant", "content": "a"}, "p")
    second = {**first, "messages": [*first["messages"], {"role": "assistant", "content": "a"}]}
    found, conv2 = _call(index, second)
    assert (found, conv2.known, conv2.raw_single) == ("p", 2, False)


def test_the_conversations_kept_whole_are_bounded_in_bytes() -> None:
    index = PrefixIndex(recent_bytes=10_000)
    for k in range(5):
        body = {"messages": [{"role": "user", "content": f"{k}" * 1000}]}
        _, conv = _call(index, body)
        index.learn(conv, {"role": "assistant", "content": f"a{k}"}, f"p{k}")
    # Each body is about 1 kB, held as 3.5 kB: two fit.
    assert len(index._tails) == 2
    assert index._held <= 10_000
    huge = {"messages": [{"role": "user", "content": "x" * 5000}]}
    _, conv = _call(index, huge)
    index.learn(conv, {"role": "assistant", "content": "a"}, "big")
    assert len(index._tails) == 0
    assert index._held == 0
