"""Text deltas read by template: the same reply and token counts as parsing every event, and
no template where the bytes around the text could mean something else."""

from __future__ import annotations

from typing import Any

import orjson

from proxy.intercept.deltas import DeltaTemplate
from proxy.intercept.usage import Reply, StreamWatcher

HEAD = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m"}


def event(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return b"data: " + orjson.dumps({**HEAD, **extra, "choices": [choice]}) + b"\n\n"


def parsed_reply(events: list[bytes]) -> tuple[Reply, int]:
    """What the watcher must find: every event parsed and absorbed."""
    reply, tokens = Reply(), 0
    for raw in events:
        payload = raw[len(b"data: ") : -2]
        if payload != b"[DONE]":
            tokens += reply.absorb_chunk(orjson.loads(payload))
    return reply, tokens


def watched(events: list[bytes]) -> tuple[StreamWatcher, int]:
    watcher = StreamWatcher(drop_usage_chunk=False, whole_events=True)
    tokens = 0
    for raw in events:
        forward, n = watcher.feed(raw)
        assert forward == raw  # forwarded as it came, template or not
        tokens += n
    return watcher, tokens


def assert_same(events: list[bytes]) -> StreamWatcher:
    watcher, tokens = watched(events)
    reply, expected = parsed_reply(events)
    assert tokens == expected
    assert watcher.reply == reply
    return watcher


def test_a_plain_stream_is_read_by_template_with_the_same_result() -> None:
    texts = ["Hello", " wor", "ld", " ünï", "cödé", " 🙂", " and", " more"]
    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": t}) for t in texts]
    events += [event({}, "stop"), b"data: [DONE]\n\n"]
    watcher = assert_same(events)
    assert watcher._template.ready
    assert watcher.reply.text == "".join(texts)
    assert watcher.reply.finish_reason == "stop"


def test_reads_of_many_events_or_of_parts_of_one_give_the_same_result() -> None:
    texts = [f" t{i}" for i in range(20)] + [' "q"', "ü", " end"]
    events = [event({"role": "assistant", "content": ""})]
    events += [event({"content": t}) for t in texts] + [event({}, "stop")]
    stream = b"".join(events)
    expected, expected_tokens = parsed_reply(events)
    for size in (7, 64, 300, len(stream)):  # reads cut anywhere, or holding many events
        watcher = StreamWatcher(drop_usage_chunk=False, whole_events=True)
        out, tokens = [], 0
        for at in range(0, len(stream), size):
            forward, n = watcher.feed(stream[at : at + size])
            out.append(forward)
            tokens += n
        out.append(watcher.flush())
        assert b"".join(out) == stream
        assert (watcher.reply, tokens) == (expected, expected_tokens)


def test_a_held_back_usage_chunk_leaves_the_text_deltas_around_it_forwarded() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 4}
    usage_only = b"data: " + orjson.dumps({**HEAD, "choices": [], "usage": usage}) + b"\n\n"
    texts = [event({"content": t}) for t in ["a", "b", "c", "d"]]
    # One read: two deltas, the usage chunk the client did not ask for, two more deltas.
    stream = texts[0] + texts[1] + usage_only + texts[2] + texts[3]
    watcher = StreamWatcher(drop_usage_chunk=True)
    watcher.feed(texts[0] + texts[1])  # the template is learnt from these
    forward, tokens = watcher.feed(stream)
    assert forward == texts[0] + texts[1] + texts[2] + texts[3]
    assert tokens == 4
    assert watcher.reply.text == "ababcd"
    assert watcher.reply.usage is not None


def test_text_with_quotes_escapes_or_control_characters_is_parsed() -> None:
    texts = ["say", ' "hi"', " back\\slash", " new\nline", "\t", "ok"]
    events = [event({"content": t}) for t in texts]
    watcher = assert_same(events)
    assert watcher.reply.text == "".join(texts)


def test_an_empty_text_is_parsed_and_counts_no_token() -> None:
    events = [event({"content": t}) for t in ["a", "b", "", "c"]]
    _, tokens = watched(events)
    assert tokens == 3
    assert_same(events)


def test_events_of_another_shape_are_parsed() -> None:
    events = [event({"content": t}) for t in ["a", "b"]]
    events.append(event({"content": "c"}, None, usage={"prompt_tokens": 1, "completion_tokens": 3}))
    events.append(event({"content": "d", "tool_calls": [{"index": 0, "id": "t"}]}))
    events.append(event({"content": "e"}, "length"))
    watcher = assert_same(events)
    assert watcher.reply.usage is not None
    assert watcher.reply.tool_calls
    assert watcher.reply.finish_reason == "length"


def spaced(text: str, decoy: str) -> bytes:
    # The engine writes spaces after colons; a vendor field holds the compact look-alike.
    vendor = '{"id": "c", "vendor": {"content":"' + decoy + '"}, '
    choices = (
        '"choices": [{"index": 0, "delta": {"content": "' + text + '"}, "finish_reason": null}]}'
    )
    return b"data: " + (vendor + choices).encode() + b"\n\n"


def test_a_look_alike_of_the_text_elsewhere_in_the_event_is_no_template() -> None:
    events = [spaced("same", "same"), spaced("same", "same"), spaced("same", "other")]
    watcher = assert_same(events)
    assert not watcher._template.ready
    assert watcher.reply.text == "samesamesame"  # never the look-alike's "other"


def test_a_template_is_not_sought_forever() -> None:
    template = DeltaTemplate()
    chunk = {"choices": [{"index": 0, "delta": {"content": "x"}}]}
    for _ in range(10):  # bytes that never hold the text where the dict has it
        template.learn(b'{"choices":[{"delta":{"content": "x"}}]}', chunk, 1)
    assert not template.ready
    template.learn(b'{"choices":[{"index":0,"delta":{"content":"x"}}]}', chunk, 1)
    assert not template.ready  # its tries were spent on the first events


def test_a_read_of_several_whole_text_deltas_is_read_by_template() -> None:
    learn = [event({"role": "assistant", "content": ""}), event({"content": "a"})]
    run = [event({"content": t}) for t in [" b", " ünï", " 🙂", " d"]]
    watcher = StreamWatcher(drop_usage_chunk=True, whole_events=True)
    for raw in learn:
        watcher.feed(raw)
    assert watcher._template.texts(b"".join(run)) == [" b", " ünï", " 🙂", " d"]
    forward, tokens = watcher.feed(b"".join(run))
    assert forward == b"".join(run)  # on as it came
    reply, expected = parsed_reply(learn + run)
    assert (watcher.reply, tokens + 1) == (reply, expected)


def test_a_read_of_text_deltas_with_anything_else_in_it_is_not_read_by_template() -> None:
    watcher = StreamWatcher(drop_usage_chunk=False, whole_events=True)
    for raw in [event({"content": "a"}), event({"content": "b"})]:
        watcher.feed(raw)
    template = watcher._template
    deltas = [event({"content": t}) for t in ["c", "d"]]
    others = [
        event({"content": ' "quoted"'}),  # text that needs escapes
        event({"content": "e"}, "stop"),  # a finish reason
        event({"content": "f"})[:-1],  # an event not yet whole
        b"data: [DONE]\n\n",
        b": a comment\n\n",
    ]
    for other in others:
        for read in (deltas[0] + other + deltas[1], deltas[0] + deltas[1] + other):
            assert template.texts(read) is None
    bad = event({"content": "gg"}).replace(b"gg", b"\xff\xfe")  # not UTF-8
    assert template.texts(deltas[0] + bad) is None


def test_mixed_reads_give_the_same_result_as_parsing_every_event() -> None:
    texts = ["a", "b", "c", ' "q"', "d", "e", "f", "\n", "g", "h"]
    events = [event({"content": t}) for t in texts] + [event({}, "stop"), b"data: [DONE]\n\n"]
    reads = [events[0], events[1], b"".join(events[2:4]), b"".join(events[4:7])]
    reads += [b"".join(events[7:9]), b"".join(events[9:])]
    watcher = StreamWatcher(drop_usage_chunk=False, whole_events=True)
    out, tokens = [], 0
    for read in reads:
        forward, n = watcher.feed(read)
        out.append(forward)
        tokens += n
    assert b"".join(out) == b"".join(events)
    assert (watcher.reply, tokens) == parsed_reply(events)
