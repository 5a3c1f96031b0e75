"""``SimCall``: one generation request as the simulated model sees it, once validated, and
``SimBatch``: the calls one HTTP request asks for (``n`` choices of each of its prompts).

``wire`` builds them from a request body; the server adds each call's ``engine_request`` to the
engine model and turns the tokens the model generates into text (``token_text``) or a tool call.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.sim.engine.engine import EngineRequest
from proxy.sim.engine.text import Answer
from proxy.sim.engine.tools import ToolCall


@dataclass(frozen=True, slots=True)
class SimCall:
    """One validated generation request: what to generate and how to answer it."""

    chat: bool
    request_id: str
    model: str
    prompt_tokens: int
    answer: Answer
    offset: int
    """Tokens of the answer already given (a continued final assistant message)."""
    max_tokens: int
    ignore_eos: bool
    priority: int
    stream: bool
    include_usage: bool
    continuous_usage: bool
    tool_call: ToolCall | None = None
    """The function call the model answers with instead of text, if it calls one."""
    index: int = 0
    """Its choice's index in the response."""
    solo: bool = True
    """The only call of its request: the engine knows it by the request id itself (else by
    ``<request id>-<index>``, as vLLM names the prompts of a batch)."""

    @property
    def response_id(self) -> str:
        return ("chatcmpl-" if self.chat else "cmpl-") + self.request_id

    @property
    def engine_id(self) -> str:
        return self.request_id if self.solo else f"{self.request_id}-{self.index}"

    @property
    def target_tokens(self) -> int | None:
        if self.ignore_eos:
            return None
        if self.tool_call is not None:
            return self.tool_call.tokens
        # An answer already complete still costs one token: the end-of-sequence.
        return max(1, self.answer.natural_length - self.offset)

    def token_text(self, i: int) -> str:
        """Text of the ``i``-th generated token of this call (EOS is empty text)."""
        position = self.offset + i
        if not self.ignore_eos and position >= self.answer.natural_length:
            return ""
        return self.answer.token(position)

    def answer_text(self, tokens: int) -> str:
        return "".join(self.token_text(i) for i in range(tokens))

    def finish_reason(self, reason: str) -> str:
        """The reason a client sees: a tool call that ended on its own finishes "tool_calls"
        (one cut by ``max_tokens`` or an abort keeps "length" or "abort")."""
        return "tool_calls" if self.tool_call is not None and reason == "stop" else reason

    def engine_request(self, *, arrival: float) -> EngineRequest:
        return EngineRequest(
            id=self.engine_id,
            prompt_tokens=self.prompt_tokens,
            target_tokens=self.target_tokens,
            max_tokens=self.max_tokens,
            priority=self.priority,
            arrival=arrival,
        )


@dataclass(frozen=True, slots=True)
class SimBatch:
    """The calls of one request, in choice order: ``n`` per prompt (chat has one prompt; a
    completions batch has several, or none for an empty prompt array)."""

    chat: bool
    request_id: str
    model: str
    stream: bool
    include_usage: bool
    calls: tuple[SimCall, ...]
    prompt_tokens: int
    """Of all its prompts, each counted once however many choices it has (as vLLM counts)."""

    @property
    def response_id(self) -> str:
        return ("chatcmpl-" if self.chat else "cmpl-") + self.request_id
