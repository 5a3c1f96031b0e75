"""What the discrete-event simulator (``des.py``) keeps while it runs: per engine, per program
and per call. Plain mutable records; the loop owns them and nothing outside it reads them."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.records import Program
from proxy.sim.engine.engine import EngineModel
from proxy.sim.simulator.capping import EngineCap
from proxy.sim.simulator.policy_queue import PolicyQueue, PrefixCache
from proxy.sim.simulator.workloads import CallSpec, ProgramSpec


@dataclass(slots=True, eq=False)
class EngineSlot:
    index: int
    model: EngineModel
    queue: PolicyQueue
    cache: PrefixCache | None
    busy: bool = False
    kicked: bool = False
    full: bool = False  # the last step used its whole token budget
    next_rerank: float = 0.0
    cap: EngineCap | None = None  # None: no admission cap (``SimConfig.cap`` off)


@dataclass(slots=True, eq=False)
class ProgramRun:
    spec: ProgramSpec
    record: Program
    pending: list[int]  # parents not yet finished, per call
    children: list[list[int]]
    tool_path: list[float]  # tool time on the critical path up to each call's release
    future: float  # service of the calls not yet released (the oracle)
    left: int  # calls not yet finished
    tokens: int = 0


@dataclass(slots=True, eq=False)
class CallRun:
    prog: ProgramRun
    spec: CallSpec
    engine: EngineSlot
    total: float  # the call's whole service
    first_token: float | None = None
    cached: int = 0
    swapped: int = 0  # KV tokens in host memory while preempted
