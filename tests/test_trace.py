"""The JSON-lines trace format and the recorder the live proxy calls."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from proxy.records import Call, CallState, Program
from proxy.trace import TraceRecord, TraceRecorder, dumps, read_trace, write_trace

RECORD = TraceRecord(
    program="p1",
    call="c2",
    arrival=1.5,
    finished=3.0,
    prompt_tokens=812,
    completion_tokens=40,
    parents=("c1",),
    engine="e0",
    first_token=2.0,
    wait=0.25,
    service=0.7,
    cached_tokens=768,
)


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    assert write_trace([RECORD, RECORD], path) == 2
    assert read_trace(path) == [RECORD, RECORD]
    assert read_trace(io.StringIO(dumps([RECORD]))) == [RECORD]


def test_minimal_lines_default_and_unknown_keys_are_ignored() -> None:
    text = (
        '{"program": "p", "call": "c", "arrival": 0, "finished": 1, "prompt_tokens": 5, '
        '"completion_tokens": 2, "from_the_future": true}\n\n'
    )
    (record,) = read_trace(io.StringIO(text))
    assert (record.parents, record.engine, record.ok, record.wait) == ((), None, True, 0.0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"program": "p"}', "lacks the key 'call'"),
        ("[1, 2]", "JSON object"),
        ("not json", "line 2"),
        (
            '{"program": "p", "call": "c", "arrival": "x", "finished": 1, '
            '"prompt_tokens": 1, "completion_tokens": 1}',
            "wrong type",
        ),
        (
            '{"program": "p", "call": "c", "arrival": 0, "finished": 1, '
            '"prompt_tokens": -1, "completion_tokens": 1}',
            "negative",
        ),
    ],
)
def test_bad_lines_name_their_number(line: str, message: str) -> None:
    good = RECORD.to_json()
    with pytest.raises(ValueError, match=message) as info:
        read_trace(io.StringIO(f"{good}\n{line}\n"))
    assert "line 2" in str(info.value)


def test_recorder_buffers_and_flushes() -> None:
    sink = io.StringIO()
    recorder = TraceRecorder(sink, flush_every=2)
    program = Program(id="p", created=0.0, tenant="t")
    call = Call(
        id="c",
        program_id="p",
        arrival=1.0,
        parents=("b",),
        prompt_tokens=10,
        completion_tokens=3,
        engine="e1",
        started_at=1.2,
        finished_at=2.0,
        wait=0.2,
        service=0.5,
        state=CallState.DONE,
    )
    recorder.record(call=call, program=program, now=2.5, first_token=1.4, future_keyword=1)
    assert sink.getvalue() == ""  # buffered
    call.state = CallState.FAILED
    recorder.record(call=call, program=program, now=2.5)
    first, second = read_trace(io.StringIO(sink.getvalue()))
    assert (first.finished, first.tenant, first.started, first.first_token) == (2.0, "t", 1.2, 1.4)
    assert (first.ok, second.ok) == (True, False)
    recorder.add(RECORD)
    with recorder:
        pass
    assert read_trace(io.StringIO(sink.getvalue()))[-1] == RECORD
    assert recorder.recorded == 3
    with pytest.raises(ValueError, match="flush_every"):
        TraceRecorder(sink, flush_every=0)


def test_recorder_opens_and_appends(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    for _ in range(2):
        with TraceRecorder.open(path) as recorder:
            recorder.add(RECORD)
    assert read_trace(path) == [RECORD, RECORD]
