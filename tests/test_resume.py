from typing import Any

import pytest

from proxy.resume import Continuation, continuation_body, resumable

CHAT: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "max_tokens": 10,
}


@pytest.mark.parametrize(
    ("body", "chat", "expected"),
    [
        (CHAT, True, True),
        ({**CHAT, "stream": False}, True, False),
        ({**CHAT, "n": 2}, True, False),
        ({**CHAT, "response_format": {"type": "json_object"}}, True, False),
        ({**CHAT, "continue_final_message": True}, True, False),
        ({"model": "m", "prompt": "once", "stream": True}, False, True),
        ({"model": "m", "prompt": [1, 2], "stream": True}, False, False),
    ],
)
def test_resumable(body: dict[str, Any], chat: bool, expected: bool) -> None:
    assert resumable(body, chat=chat, stream=body.get("stream", False)) is expected


def test_chat_continuation_appends_the_partial_answer() -> None:
    out = continuation_body(CHAT, chat=True, text=" a b c", tokens=3)
    assert out["messages"][-1] == {"role": "assistant", "content": " a b c"}
    assert out["continue_final_message"] is True
    assert out["add_generation_prompt"] is False
    assert out["max_tokens"] == 7
    assert CHAT["messages"] == [{"role": "user", "content": "hi"}]  # the client's body is untouched


def test_completion_continuation_extends_the_prompt() -> None:
    out = continuation_body(
        {"model": "m", "prompt": "once", "max_tokens": 4}, chat=False, text=" upon", tokens=1
    )
    assert (out["prompt"], out["max_tokens"]) == ("once upon", 3)


def test_continuation_chunks_join_the_first_answer() -> None:
    rewrite = Continuation(first_id="chatcmpl-1", first_created=100, tokens_before=3)
    opening = {
        "id": "chatcmpl-1-r1",
        "created": 200,
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        ],
    }
    assert rewrite(opening) is None
    token = {
        "id": "chatcmpl-1-r1",
        "created": 200,
        "choices": [{"index": 0, "delta": {"content": " d"}, "finish_reason": None}],
    }
    assert rewrite(token) == {
        "id": "chatcmpl-1",
        "created": 100,
        "choices": [{"index": 0, "delta": {"content": " d"}, "finish_reason": None}],
    }
    usage = {
        "id": "x",
        "choices": [],
        "usage": {"prompt_tokens": 13, "completion_tokens": 2, "total_tokens": 15},
    }
    out = rewrite(usage)
    assert out is not None
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
