"""What the simulated model does when a request offers it tools: whether it calls one, which,
and with what arguments.

Real agent loops (LangChain's ``bind_tools``, the OpenAI SDK with ``tools=``) need a model that
calls a tool when asked something and answers in text once the tool's result is back. The
simulated model does exactly that, deterministically: it calls the function whose name and
description share the most words with the user's request (ties drawn from the answer), and the
call's id and argument values come from the answer (so from the answer key), like the words of
a text answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from proxy.errors import BadRequest
from proxy.intercept.tokens import estimate_tokens
from proxy.sim.engine.text import Answer

ToolChoiceMode = Literal["none", "auto", "required"]
_MODES: dict[str, ToolChoiceMode] = {"none": "none", "auto": "auto", "required": "required"}

_ID_SALT = 0xCA11
_NUMBER_SALT = 0x4E0
_PICK_SALT = 0x71C4


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the model makes. It costs ``tokens`` generated tokens, and its
    arguments come out spread over them, one piece per token."""

    id: str
    name: str
    arguments: str

    @property
    def tokens(self) -> int:
        """Generated tokens the call costs: its name and arguments, at least one."""
        return max(1, estimate_tokens(self.name + self.arguments))

    def arguments_upto(self, tokens: int) -> str:
        """The arguments written after ``tokens`` generated tokens (all of them from
        ``self.tokens`` on; a call cut short by ``max_tokens`` or an abort is incomplete)."""
        return self.arguments[: min(tokens, self.tokens) * len(self.arguments) // self.tokens]

    def piece(self, i: int) -> str:
        """The arguments written by generated token ``i`` (0-based); empty past the end, and
        for some tokens when the arguments are shorter than the call's token count."""
        return self.arguments_upto(i + 1)[len(self.arguments_upto(i)) :]


def _named(choice: Mapping[str, Any], kind: str) -> str | None:
    inner = choice.get(kind)
    name = inner.get("name") if isinstance(inner, Mapping) else None
    return name if isinstance(name, str) else None


def tool_choice(choice: object, names: Sequence[str]) -> tuple[ToolChoiceMode, str | None]:
    """A request's ``tool_choice`` (a mode, a named function, OpenAI's ``allowed_tools`` or
    ``None``) as (mode, named function), checked against the names of the function ``tools``
    offered as vLLM does; ``BadRequest`` for a bad shape, a forced call with no tools, a
    function not offered, or a named custom tool (the simulated model calls functions only)."""
    named: str | None = None
    if choice is None:
        return "auto", None
    if isinstance(choice, str):
        if choice not in _MODES:
            raise BadRequest(
                f"tool_choice must be 'none', 'auto', 'required' or a named function, not "
                f"{choice!r}",
                param="tool_choice",
            )
        mode = _MODES[choice]
    elif isinstance(choice, Mapping) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools")
        given = allowed.get("mode") if isinstance(allowed, Mapping) else None
        if given not in ("auto", "required"):
            raise BadRequest(
                "allowed_tools needs a mode of 'auto' or 'required'", param="tool_choice"
            )
        mode = _MODES[given]
    elif (
        isinstance(choice, Mapping) and choice.get("type") == "custom" and _named(choice, "custom")
    ):
        raise BadRequest(
            "the simulated engine calls function tools only; a custom tool cannot be forced",
            param="tool_choice",
            code="unsupported_tool_choice",
        )
    else:
        name = _named(choice, "function") if isinstance(choice, Mapping) else None
        if name is None or not isinstance(choice, Mapping) or choice.get("type") != "function":
            raise BadRequest(
                'a named tool_choice must be {"type": "function", "function": {"name": ...}}',
                param="tool_choice",
            )
        mode, named = "required", name
    if mode == "required" and not names:
        raise BadRequest("When using `tool_choice`, `tools` must be set.", param="tool_choice")
    if named is not None and named not in names:
        raise BadRequest(f"Tool '{named}' has not been passed in `tools`.", param="tool_choice")
    return mode, named


def allowed_functions(choice: object, names: Sequence[str]) -> list[str]:
    """The functions ``tool_choice`` lets the model call: those its ``allowed_tools`` list
    names (OpenAI's way to narrow the offer without changing ``tools``), else all."""
    if not isinstance(choice, Mapping) or choice.get("type") != "allowed_tools":
        return list(names)
    allowed = choice.get("allowed_tools")
    listed = allowed.get("tools") if isinstance(allowed, Mapping) else None
    if not isinstance(listed, list):
        return list(names)
    wanted = {_named(t, "function") for t in listed if isinstance(t, Mapping)}
    return [n for n in names if n in wanted]


_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
# Words that say nothing about which tool fits: question words and the usual verb prefixes.
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "what",
        "which",
        "from",
        "this",
        "that",
        "you",
        "your",
        "are",
        "was",
        "get",
        "set",
        "fetch",
        "list",
        "find",
        "how",
        "when",
        "where",
        "who",
        "why",
        "can",
        "please",
        "tell",
    ]
)


def _words(text: str) -> set[str]:
    return {w.lower() for w in _WORD.findall(text) if len(w) > 2} - _STOP


def rank_functions(functions: Sequence[tuple[str, str]], request: str, answer: Answer) -> list[str]:
    """Function names, most plausible first, for a request that says ``request``: by the
    words a function's name and description share with it, ties (and a request that shares
    none) in an order drawn from the answer, so the same conversation picks the same tool and
    different ones spread over the tools offered."""
    asked = _words(request)

    def key(item: tuple[int, tuple[str, str]]) -> tuple[int, int]:
        i, (name, description) = item
        shared = len(asked & _words(f"{name} {description}"))
        return -shared, answer.draw(_PICK_SALT + i) & 0xFFFF

    return [name for _, (name, _) in sorted(enumerate(functions), key=key)]


def called_function(
    names: Sequence[str],
    *,
    mode: ToolChoiceMode,
    named: str | None,
    last_role: str,
    continuing: bool = False,
) -> str | None:
    """The function the model calls, or ``None`` for a text answer. ``names`` come most
    plausible first (``rank_functions``).

    With tools offered and ``tool_choice`` not "none", the model calls one when the user spoke
    last, and answers in text after a tool's result (or anything else). "required" and a named
    function force a call whatever came last. A request continuing a final assistant message
    (``continue_final_message``) always gets text: it asks for the rest of that message.
    """
    if not names or mode == "none" or continuing:
        return None
    if named is not None:
        return named
    if mode == "required" or last_role == "user":
        return names[0]
    return None


def example_value(schema: Any, answer: Answer, i: int) -> Any:
    """A value for the ``i``-th argument with this JSON schema: the first of an ``enum``; else
    by ``type`` (the first one not "null" if it is a list): a word of the answer for a string,
    a small number for an integer or a number, true for a boolean, null for anything else."""
    if not isinstance(schema, Mapping):
        return None
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        return answer.word(i)
    if kind in ("integer", "number"):
        return 1 + answer.draw(_NUMBER_SALT + i) % 9
    if kind == "boolean":
        return True
    return None


def example_arguments(parameters: Mapping[str, Any] | None, answer: Answer) -> str:
    """JSON arguments for a function with these ``parameters`` (a JSON schema): a value for each
    declared property, in declaration order, or only for the ``required`` ones if it lists
    them."""
    properties = (parameters or {}).get("properties")
    if not isinstance(properties, Mapping):
        return "{}"
    required = (parameters or {}).get("required")
    names = [n for n in properties if not isinstance(required, list) or n in required]
    values = {name: example_value(properties[name], answer, i) for i, name in enumerate(names)}
    # The standard library's encoder: an enum value may be an integer past 64 bits.
    return json.dumps(values, separators=(",", ":"), ensure_ascii=False)


def make_tool_call(answer: Answer, name: str, parameters: Mapping[str, Any] | None) -> ToolCall:
    """The call of function ``name`` that the model makes for this answer."""
    return ToolCall(
        id=f"call_{answer.draw(_ID_SALT):016x}",
        name=name,
        arguments=example_arguments(parameters, answer),
    )
