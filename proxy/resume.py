"""Transparent resumption of a preempted call.

When the gate preempts a streaming call, the proxy aborts it at the engine and later sends a
*continuation*: the same request with the text generated so far as a final assistant message
to be continued (chat: ``continue_final_message: true``, ``add_generation_prompt: false``;
completions: the prompt followed by the text). The client's stream goes on from where it
stopped: the continuation's opening chunk is dropped, its chunks carry the first segment's id
and creation time, and its usage counts the whole answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Request fields under which a continuation would not continue the same answer.
_NOT_RESUMABLE = ("response_format", "guided_json", "guided_regex", "guided_choice", "guided_grammar", "structured_outputs", "echo", "best_of", "prompt_logprobs")  # fmt: skip


def resumable(body: dict[str, Any], *, chat: bool, stream: bool) -> bool:
    """Can this call be preempted and resumed without the client noticing more than a pause?"""
    if not stream or body.get("n", 1) not in (None, 1):
        return False
    if any(body.get(field) for field in _NOT_RESUMABLE):
        return False
    if chat:
        if body.get("continue_final_message"):
            return False  # already a continuation of the client's own
        messages = body.get("messages")
        return isinstance(messages, list) and bool(messages)
    return isinstance(body.get("prompt"), str)


def _reduce(value: Any, by: int) -> Any:
    return max(1, value - by) if isinstance(value, int) and not isinstance(value, bool) else value


def continuation_body(
    body: dict[str, Any], *, chat: bool, text: str, tokens: int
) -> dict[str, Any]:
    """The request that continues ``body`` after ``text`` (``tokens`` tokens) was generated."""
    out = dict(body)
    for field in ("max_tokens", "max_completion_tokens"):
        if field in out:
            out[field] = _reduce(out[field], tokens)
    if chat:
        out["messages"] = [*body["messages"], {"role": "assistant", "content": text}]
        out["continue_final_message"] = True
        out["add_generation_prompt"] = False
    else:
        out["prompt"] = body["prompt"] + text
    return out


@dataclass(slots=True)
class Continuation:
    """Rewrites a continuation's chunks into the client's one response."""

    first_id: str | None
    first_created: int | None
    tokens_before: int  # generated in earlier segments
    _opened: bool = False

    def __call__(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        if self.first_id is not None and "id" in chunk:
            chunk["id"] = self.first_id
        if self.first_created is not None and "created" in chunk:
            chunk["created"] = self.first_created
        choices = chunk.get("choices")
        if not self._opened and isinstance(choices, list) and choices:
            self._opened = True
            delta = choices[0].get("delta") if isinstance(choices[0], dict) else None
            if isinstance(delta, dict) and "role" in delta:
                del delta["role"]  # the client saw the answer open already
                if (
                    not delta.get("content")
                    and not delta.get("tool_calls")
                    and not choices[0].get("finish_reason")
                ):
                    return None
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            completion = usage["completion_tokens"] + self.tokens_before
            prompt = usage.get("prompt_tokens")
            if isinstance(prompt, int):
                # The continuation's prompt held the earlier part of the answer.
                usage["prompt_tokens"] = max(0, prompt - self.tokens_before)
                usage["total_tokens"] = usage["prompt_tokens"] + completion
            usage["completion_tokens"] = completion
        return chunk
