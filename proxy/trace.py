"""Call traces as JSON lines: one finished call per line, written by the live proxy or by the
simulator, and read back to replay recorded traffic in the simulator (``workloads.from_trace``).

One line looks like::

    {"v": 1, "program": "p1", "call": "c7", "arrival": 12.5, "finished": 14.0,
     "prompt_tokens": 812, "completion_tokens": 40, "parents": ["c6"], ...}

Required keys: ``program``, ``call``, ``arrival``, ``finished``, ``prompt_tokens``,
``completion_tokens``. The rest are optional and default as ``TraceRecord`` says. Unknown keys
are ignored on reading, so the format can grow without breaking old readers; ``v`` is the
format version. Times are seconds on the recorder's clock (wall or virtual); readers only use
differences.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from proxy.records import Call, CallState, Program

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One finished call."""

    program: str
    call: str
    arrival: float
    finished: float
    prompt_tokens: int
    completion_tokens: int
    parents: tuple[str, ...] = ()
    thread: str = ""
    tenant: str = ""
    engine: str | None = None
    started: float | None = None
    """When it was first sent to an engine."""
    first_token: float | None = None
    wait: float = 0.0
    service: float = 0.0
    cached_tokens: int = 0
    preemptions: int = 0
    ok: bool = True

    def to_json(self) -> str:
        data = {"v": FORMAT_VERSION, **asdict(self)}
        data["parents"] = list(self.parents)
        return json.dumps(data, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TraceRecord:
        try:
            record = cls(
                program=str(data["program"]),
                call=str(data["call"]),
                arrival=float(data["arrival"]),
                finished=float(data["finished"]),
                prompt_tokens=int(data["prompt_tokens"]),
                completion_tokens=int(data["completion_tokens"]),
                parents=tuple(str(p) for p in data.get("parents") or ()),
                thread=str(data.get("thread") or ""),
                tenant=str(data.get("tenant") or ""),
                engine=None if data.get("engine") is None else str(data["engine"]),
                started=_opt_float(data.get("started")),
                first_token=_opt_float(data.get("first_token")),
                wait=float(data.get("wait") or 0.0),
                service=float(data.get("service") or 0.0),
                cached_tokens=int(data.get("cached_tokens") or 0),
                preemptions=int(data.get("preemptions") or 0),
                ok=bool(data.get("ok", True)),
            )
        except KeyError as exc:
            raise ValueError(f"trace record lacks the key {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"trace record has a field of the wrong type: {exc}") from exc
        if not (math.isfinite(record.arrival) and math.isfinite(record.finished)):
            raise ValueError("trace record times must be finite numbers")
        if record.prompt_tokens < 0 or record.completion_tokens < 0:
            raise ValueError("trace record token counts must not be negative")
        return record


def _opt_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def write_trace(records: Iterable[TraceRecord], sink: TextIO | str | Path) -> int:
    """Write records as JSON lines; returns how many."""
    if isinstance(sink, str | Path):
        with open(sink, "w", encoding="utf-8") as f:
            return write_trace(records, f)
    n = 0
    for record in records:
        sink.write(record.to_json())
        sink.write("\n")
        n += 1
    return n


def iter_trace(source: TextIO | str | Path) -> Iterator[TraceRecord]:
    """Records from JSON lines; blank lines are skipped, a bad line raises ``ValueError``
    naming its line number."""
    if isinstance(source, str | Path):
        with open(source, encoding="utf-8") as f:
            yield from iter_trace(f)
        return
    for number, line in enumerate(source, start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if not isinstance(data, dict):
                raise ValueError("a line must hold a JSON object")
            yield TraceRecord.from_dict(data)
        except ValueError as exc:
            raise ValueError(f"trace line {number}: {exc}") from exc


def read_trace(source: TextIO | str | Path) -> list[TraceRecord]:
    return list(iter_trace(source))


def record_of(
    call: Call,
    program: Program,
    *,
    now: float,
    first_token: float | None = None,
    cached_tokens: int = 0,
    preemptions: int = 0,
) -> TraceRecord:
    """The trace record of a call that has just ended at ``now``."""
    return TraceRecord(
        program=program.id,
        call=call.id,
        arrival=call.arrival,
        finished=call.finished_at if call.finished_at is not None else now,
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        parents=call.parents,
        thread=call.thread,
        tenant=program.tenant,
        engine=call.engine,
        started=call.started_at,
        first_token=first_token,
        wait=call.wait,
        service=call.service,
        cached_tokens=cached_tokens,
        preemptions=preemptions,
        ok=call.state is not CallState.FAILED,
    )


def shifted(record: TraceRecord, offset: float) -> TraceRecord:
    """``record`` with every time moved by ``offset`` seconds."""

    def move(t: float | None) -> float | None:
        return None if t is None else t + offset

    return replace(
        record,
        arrival=record.arrival + offset,
        finished=record.finished + offset,
        started=move(record.started),
        first_token=move(record.first_token),
    )


class TraceRecorder:
    """Appends one line per finished call to a text sink.

    The live proxy calls ``record(call=..., program=..., now=...)`` once per call when it ends
    (where the scheduler hands the call to the policy's ``on_finish``). Lines are buffered and
    written ``flush_every`` records at a time, so the request path pays for a ``json.dumps``
    and a list append, not for a write; ``close`` (or leaving a ``with`` block) flushes the rest.
    The recorder never reads a clock: times are the records' own.
    """

    def __init__(
        self,
        sink: TextIO,
        *,
        flush_every: int = 64,
        owns_sink: bool = False,
        time_offset: float = 0.0,
    ) -> None:
        if flush_every < 1:
            raise ValueError("flush_every must be at least 1")
        self._sink = sink
        self._owns = owns_sink
        self._buffer: list[str] = []
        self._flush_every = flush_every
        # Added to every time written: the live proxy records unix seconds (readers only use
        # differences, so a shift changes nothing for replay).
        self._offset = time_offset
        self.recorded = 0

    @classmethod
    def open(
        cls, path: str | Path, *, flush_every: int = 64, time_offset: float = 0.0
    ) -> TraceRecorder:
        """A recorder appending to the file at ``path`` (created if missing)."""
        return cls(
            open(path, "a", encoding="utf-8"),  # the recorder owns and closes it
            flush_every=flush_every,
            owns_sink=True,
            time_offset=time_offset,
        )

    def record(
        self,
        *,
        call: Call,
        program: Program,
        now: float,
        first_token: float | None = None,
        cached_tokens: int = 0,
        preemptions: int = 0,
        **_: object,
    ) -> None:
        record = record_of(
            call,
            program,
            now=now,
            first_token=first_token,
            cached_tokens=cached_tokens,
            preemptions=preemptions,
        )
        if self._offset:
            record = shifted(record, self._offset)
        self.add(record)

    def add(self, record: TraceRecord) -> None:
        self._buffer.append(record.to_json())
        self.recorded += 1
        if len(self._buffer) >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self._sink.write("\n".join(self._buffer) + "\n")
            self._buffer.clear()
        self._sink.flush()

    def close(self) -> None:
        self.flush()
        if self._owns:
            self._sink.close()

    def __enter__(self) -> TraceRecorder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def dumps(records: Iterable[TraceRecord]) -> str:
    """Records as one JSON-lines string (tests, small traces)."""
    out = io.StringIO()
    write_trace(records, out)
    return out.getvalue()
