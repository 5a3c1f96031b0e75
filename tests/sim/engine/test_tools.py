"""What the simulated model does with tools: when it calls one, which, and with what arguments."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.errors import BadRequest
from proxy.intercept.tokens import estimate_tokens
from proxy.sim.engine.text import answer_for
from proxy.sim.engine.tools import (
    ToolCall,
    called_function,
    example_arguments,
    example_value,
    make_tool_call,
    tool_choice,
)

ANSWER = answer_for(b'[{"content":"weather?","role":"user"}]')
WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "metric": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city", "days"],
}


def test_arguments_hold_a_value_per_required_property_in_declaration_order() -> None:
    arguments = example_arguments(WEATHER, ANSWER)
    values = orjson.loads(arguments)
    assert list(values) == ["city", "days"]
    assert values["city"] == ANSWER.word(0)
    assert isinstance(values["days"], int)
    assert 1 <= values["days"] <= 9
    assert arguments == example_arguments(WEATHER, ANSWER)  # deterministic
    everything = orjson.loads(example_arguments({**WEATHER, "required": None}, ANSWER))
    assert list(everything) == ["city", "days", "metric", "tags"]
    assert (everything["metric"], everything["tags"]) == (True, None)
    assert example_arguments(None, ANSWER) == "{}"
    assert example_arguments({"type": "object"}, ANSWER) == "{}"
    assert example_arguments({"properties": {"x": {}}, "required": []}, ANSWER) == "{}"


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        ({"type": "string"}, ANSWER.word(2)),
        ({"type": ["null", "string"]}, ANSWER.word(2)),
        ({"type": "string", "enum": ["celsius", "fahrenheit"]}, "celsius"),
        ({"type": "boolean"}, True),
        ({"type": "object"}, None),
        ({"anyOf": [{"type": "string"}, {"type": "null"}]}, None),
        ("not a schema", None),
    ],
)
def test_example_values_by_schema(schema: Any, expected: Any) -> None:
    assert example_value(schema, ANSWER, 2) == expected


def test_numbers_are_small() -> None:
    values = {example_value({"type": "number"}, ANSWER, i) for i in range(50)}
    assert values <= set(range(1, 10))
    assert len(values) > 1


def test_a_call_is_deterministic_and_costs_its_name_and_arguments() -> None:
    call = make_tool_call(ANSWER, "get_weather", WEATHER)
    assert call == make_tool_call(ANSWER, "get_weather", WEATHER)
    assert call.id.startswith("call_")
    int(call.id.removeprefix("call_"), 16)
    other = answer_for(b'[{"content":"and tomorrow?","role":"user"}]')
    assert make_tool_call(other, "get_weather", WEATHER).id != call.id
    assert call.tokens == estimate_tokens(call.name + call.arguments)
    assert ToolCall(id="call_0", name="", arguments="").tokens == 1


@pytest.mark.parametrize("arguments", ['{"city":"bak","days":3}', "{}", ""])
def test_arguments_come_out_in_one_piece_per_token(arguments: str) -> None:
    call = ToolCall(id="call_0", name="get_weather", arguments=arguments)
    pieces = [call.piece(i) for i in range(call.tokens + 3)]
    assert "".join(pieces) == arguments
    assert pieces[call.tokens :] == ["", "", ""]
    for i in range(call.tokens + 2):
        assert call.arguments_upto(i) == "".join(pieces[:i])
    if len(arguments) >= call.tokens:
        assert all(pieces[: call.tokens])  # every token writes something


@pytest.mark.parametrize(
    ("mode", "named", "last_role", "continuing", "expected"),
    [
        ("auto", None, "user", False, "first"),
        ("auto", None, "tool", False, None),  # a tool's result came back: answer in text
        ("auto", None, "assistant", False, None),
        ("none", None, "user", False, None),
        ("required", None, "tool", False, "first"),
        ("required", "second", "tool", False, "second"),
        ("auto", None, "assistant", True, None),
        ("required", None, "assistant", True, None),
    ],
)
def test_when_the_model_calls_a_tool(
    mode: Any, named: str | None, last_role: str, continuing: bool, expected: str | None
) -> None:
    names = ["first", "second"]
    chosen = called_function(
        names, mode=mode, named=named, last_role=last_role, continuing=continuing
    )
    assert chosen == expected
    assert called_function([], mode="auto", named=None, last_role="user") is None


def test_tool_choice_is_read_as_vllm_reads_it() -> None:
    names = ["get_weather"]
    assert tool_choice(None, names) == ("auto", None)
    assert tool_choice("none", []) == ("none", None)
    assert tool_choice("auto", []) == ("auto", None)
    assert tool_choice("required", names) == ("required", None)
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert tool_choice(named, names) == ("required", "get_weather")


@pytest.mark.parametrize(
    ("choice", "names", "match"),
    [
        ("sometimes", ["f"], "tool_choice must be"),
        ({"type": "function", "function": {}}, ["f"], "named tool_choice"),
        ({"type": "tool", "function": {"name": "f"}}, ["f"], "named tool_choice"),
        ({"type": "function", "function": {"name": 3}}, ["f"], "named tool_choice"),
        ("required", [], "tools` must be set"),
        ({"type": "function", "function": {"name": "g"}}, ["f"], "has not been passed"),
    ],
)
def test_bad_tool_choices_are_refused(choice: Any, names: list[str], match: str) -> None:
    with pytest.raises(BadRequest, match=match) as caught:
        tool_choice(choice, names)
    assert caught.value.param == "tool_choice"
