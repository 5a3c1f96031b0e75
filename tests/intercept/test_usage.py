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


def test_whole_events_hold_back_a_partial_event_until_its_end_comes() -> None:
    watcher = StreamWatcher(drop_usage_chunk=False, whole_events=True)
    first, second = _chunk("a"), _chunk("b")
    # The separator itself is split between two reads.
    out1, t1 = watcher.feed(first[:-1])
    out2, t2 = watcher.feed(first[-1:] + second[:10])
    out3, t3 = watcher.feed(second[10:])
    assert (out1, out2, out3) == (b"", first, second)
    assert (t1, t2, t3) == (0, 1, 1)


def test_an_aligned_read_is_forwarded_as_it_came() -> None:
    watcher = StreamWatcher(drop_usage_chunk=True)
    data = _chunk("a") + _chunk("b")
    out, tokens = watcher.feed(data)
    assert out is data
    assert tokens == 2


def test_usage_chunk_dropped_from_the_middle_of_one_read() -> None:
    watcher = StreamWatcher(drop_usage_chunk=True)
    data = _chunk("a") + USAGE + _chunk(None, "stop") + DONE + b'data: {"par'
    out, tokens = watcher.feed(data)
    assert out == _chunk("a") + _chunk(None, "stop") + DONE
    assert tokens == 1
    assert watcher.done
    assert watcher.reply.usage is not None


def test_crlf_events_split_across_reads() -> None:
    watcher = StreamWatcher(drop_usage_chunk=True)
    data = (_chunk("x") + USAGE + _chunk("y")).replace(b"\n\n", b"\r\n\r\n")
    out = b"".join(watcher.feed(data[i : i + 5])[0] for i in range(0, len(data), 5))
    assert out.replace(b"\r\n", b"\n") == _chunk("x") + _chunk("y")
    assert watcher.reply.text == "xy"


def test_multi_line_events_and_a_stream_without_a_final_blank_line() -> None:
    watcher = StreamWatcher(drop_usage_chunk=False, whole_events=True)
    out, tokens = watcher.feed(
        b'event: message\ndata: {"choices":[{"index":0,\ndata: "text":"hi"}]}\n\n'
    )
    assert tokens == 1
    assert out.startswith(b"event: message")
    assert watcher.feed(b"data: [DONE]")[0] == b""
    assert watcher.flush() == b"data: [DONE]"
    assert watcher.done


def test_a_segment_that_cannot_be_cut_is_passed_through_in_pieces() -> None:
    watcher = StreamWatcher(drop_usage_chunk=False, whole_events=True)
    watcher.whole_events(False)
    piece = _chunk("a")[:9]
    assert watcher.feed(piece) == (piece, 0)
