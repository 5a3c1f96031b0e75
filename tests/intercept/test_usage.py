import orjson

from proxy.intercept.usage import Reply, StreamWatcher


def _event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _chunk(
    content: str | None = None, finish: str | None = None, tools: list[object] | None = None
) -> bytes:
    delta: dict[str, object] = {}
    if content is not None:
        delta["content"] = content
    if tools is not None:
        delta["tool_calls"] = tools
    return _event(
        {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": None}
    )


USAGE = _event(
    {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}}
)
DONE = b"data: [DONE]\n\n"


def test_passes_bytes_through_unchanged_when_client_asked_for_usage() -> None:
    watcher = StreamWatcher(drop_usage_chunk=False)
    stream = _chunk("He") + _chunk("llo", "stop") + USAGE + DONE
    # Split at awkward places: the watcher must not re-chunk what it forwards.
    pieces = [stream[:5], stream[5:40], stream[40:]]
    out = [watcher.feed(p)[0] for p in pieces]
    assert out == pieces
    assert watcher.reply.text == "Hello"
    assert watcher.reply.usage is not None
    assert (watcher.reply.usage.prompt_tokens, watcher.reply.usage.completion_tokens) == (7, 2)
    assert watcher.reply.finish_reason == "stop"
    assert watcher.done


def test_drops_only_the_usage_chunk_it_asked_for() -> None:
    watcher = StreamWatcher(drop_usage_chunk=True)
    stream = _chunk("a") + _chunk("b", "length") + USAGE + DONE
    forwarded = b"".join(watcher.feed(stream[i : i + 7])[0] for i in range(0, len(stream), 7))
    forwarded += watcher.flush()
    assert forwarded == _chunk("a") + _chunk("b", "length") + DONE
    assert watcher.reply.usage is not None
    assert watcher.reply.usage.completion_tokens == 2


def test_counts_tokens_as_they_stream() -> None:
    watcher = StreamWatcher(drop_usage_chunk=False)
    _, first = watcher.feed(_chunk("x") + _chunk("y"))
    _, second = watcher.feed(_chunk(None, "stop"))
    assert (first, second) == (2, 0)


def test_crlf_events_and_comments() -> None:
    watcher = StreamWatcher(drop_usage_chunk=True)
    data = b": keep-alive\r\n\r\n" + _chunk("z").replace(b"\n\n", b"\r\n\r\n")
    out, tokens = watcher.feed(data)
    assert out == data
    assert tokens == 1


def test_tool_calls_are_rebuilt_from_deltas() -> None:
    watcher = StreamWatcher(drop_usage_chunk=False)
    watcher.feed(
        _chunk(
            tools=[
                {
                    "index": 0,
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_", "arguments": ""},
                }
            ]
        )
    )
    watcher.feed(
        _chunk(tools=[{"index": 0, "function": {"name": "weather", "arguments": '{"city":'}}])
    )
    watcher.feed(
        _chunk(tools=[{"index": 0, "function": {"arguments": '"Paris"}'}}], finish="tool_calls")
    )
    message = watcher.reply.assistant_message()
    assert message == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ],
    }


def test_error_event_is_kept() -> None:
    watcher = StreamWatcher(drop_usage_chunk=False)
    watcher.feed(_event({"error": {"message": "boom", "type": "x"}}))
    assert watcher.reply.error == {"message": "boom", "type": "x"}


def test_whole_body() -> None:
    reply = Reply()
    reply.absorb_body(
        orjson.dumps(
            {
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "hi"},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        )
    )
    assert reply.text == "hi"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == 3
    reply2 = Reply()
    reply2.absorb_body(b"not json")
    assert reply2.usage is None
