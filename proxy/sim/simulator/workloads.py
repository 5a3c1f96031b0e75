"""Synthetic agent programs with the statistics of the paper's four workloads (AUTELLIX.md).

A workload is a list of ``ProgramSpec``: each program arrives at a time drawn from a Poisson
process and holds a small DAG of ``CallSpec``. A call is released when all its parents have
finished, plus a tool (or user think) time; with no parents it is released at the program's
arrival.

How the paper's per-call "prefill tokens mean" becomes prompts: it is read as the mean number
of *new* tokens a call adds (the user turn, the tool observation, or for a first call its
system prompt and task). Multi-turn programs resend their conversation, so a call's prompt is
the full context of the call it continues (``prefix_of``: that call's prompt plus its answer)
plus its new tokens, and prompts grow turn by turn. The other reading (the mean of whole
prompts) cannot hold for ShareGPT: a second turn alone resends a 277-token answer, above the
255.65 mean. Prefix caching in the simulator makes the resent part cheap when the engine still
holds it. A context that would exceed ``max_context`` is cut to its most recent tokens (as chat
front-ends do), which breaks the shared prefix for that call.

Lengths are clipped lognormals whose location is solved so that the *clipped integer* mean is
the paper's mean exactly (``LengthDist``); the spreads (sigma) are ours, documented per field.
Randomness: program contents come from one stream and arrival gaps from another, both seeded,
so the same seed gives the same programs at every arrival rate (common random numbers: curves
over rates compare the same programs).
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from proxy.trace import TraceRecord

MAX_CONTEXT = 32768
"""Tokens a context may reach (prompt + answer) before it is cut to its most recent ones."""


@dataclass(frozen=True, slots=True)
class LengthDist:
    """Integers ``clip(ceil(X), low, high)`` with ``X`` lognormal of shape ``sigma``, located so
    that their mean is ``mean``."""

    mean: float
    sigma: float
    high: int
    low: int = 1
    mu: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.low <= self.mean <= self.high or self.sigma < 0:
            raise ValueError(f"cannot have mean {self.mean} within [{self.low}, {self.high}]")
        object.__setattr__(self, "mu", self._solve())

    def clipped_mean(self, mu: float) -> float:
        # E[L] = low + sum over k in [low, high) of P(X > k); P(X > k) from the normal tail.
        scale = self.sigma * math.sqrt(2.0)
        total = float(self.low)
        for k in range(self.low, self.high):
            term = 0.5 * math.erfc((math.log(k) - mu) / scale)
            total += term
            if term < 1e-15:  # past the median the terms only shrink: the rest is negligible
                break
        return total

    def _solve(self) -> float:
        if self.sigma == 0:  # a constant: the mean, rounded
            return math.log(self.mean)
        lo, hi = math.log(self.low) - 12.0 * (self.sigma + 1), math.log(self.high) + 1.0
        for _ in range(60):  # the clipped mean is increasing in mu: bisect
            mid = (lo + hi) / 2
            if self.clipped_mean(mid) < self.mean:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    def sample(self, rng: random.Random) -> int:
        if self.sigma == 0:
            return min(max(round(self.mean), self.low), self.high)
        x = math.exp(self.mu + self.sigma * rng.gauss(0.0, 1.0))
        return min(max(math.ceil(x), self.low), self.high)


@dataclass(frozen=True, slots=True)
class CallSpec:
    """One call of a program; indices refer to the program's ``calls``."""

    index: int
    prompt_tokens: int
    output_tokens: int
    parents: tuple[int, ...] = ()
    think_s: float = 0.0
    """Tool or think time between the last parent's finish (or the program's arrival) and this
    call's release."""
    prefix_of: int | None = None
    """The call whose context (prompt + answer) this prompt starts with; None: a fresh prompt."""
    prefix_tokens: int = 0
    """How many leading tokens it shares with that context (0 when there is none)."""


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    id: str
    kind: str
    arrival: float
    calls: tuple[CallSpec, ...]

    @property
    def output_tokens(self) -> int:
        return sum(c.output_tokens for c in self.calls)


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """One of the paper's workloads. ``shape`` is "chain" (one call at a time, each continuing
    the conversation: chatbot, ReAct) or "tree" (LATS: rounds of ``width`` parallel expansions,
    each followed by its evaluation; a round starts when the previous round's evaluations are
    all done, from one of its children, or from the root again at ``max_depth``)."""

    name: str
    shape: str
    calls: LengthDist
    """Calls per program (chain) or rounds per program (tree: 2 x width calls each)."""
    new_tokens: LengthDist
    output_tokens: LengthDist
    tool_time_s: float
    """Mean of the exponential tool / think time before every non-root call."""
    width: int = 5
    max_depth: int = 7
    max_context: int = MAX_CONTEXT

    def program(
        self, pid: str, arrival: float, rng: random.Random, tool_scale: float, fresh: bool = False
    ) -> ProgramSpec:
        """One program; ``fresh``: prompts carry only their new tokens (no resent context)."""
        make = self._tree if self.shape == "tree" else self._chain
        return ProgramSpec(pid, self.name, arrival, tuple(make(rng, tool_scale, fresh)))

    def _think(self, rng: random.Random, scale: float) -> float:
        mean = self.tool_time_s * scale
        return rng.expovariate(1.0 / mean) if mean > 0 else 0.0

    def _call(
        self,
        index: int,
        rng: random.Random,
        *,
        context: int,
        parents: tuple[int, ...],
        prefix_of: int | None,
        think: float,
    ) -> CallSpec:
        new, out = self.new_tokens.sample(rng), self.output_tokens.sample(rng)
        prompt, shared = context + new, context
        if prompt + out > self.max_context:  # keep the most recent tokens: the prefix is lost
            prompt, shared = max(1, self.max_context - out), 0
        return CallSpec(index, prompt, out, parents, think, prefix_of if shared else None, shared)

    def _chain(self, rng: random.Random, tool_scale: float, fresh: bool) -> list[CallSpec]:
        calls: list[CallSpec] = []
        for i in range(self.calls.sample(rng)):
            prev = calls[-1] if calls else None
            context = prev.prompt_tokens + prev.output_tokens if prev and not fresh else 0
            calls.append(
                self._call(
                    i,
                    rng,
                    context=context,
                    parents=(i - 1,) if prev else (),
                    prefix_of=i - 1 if prev else None,
                    think=self._think(rng, tool_scale) if prev else 0.0,
                )
            )
        return calls

    def _tree(self, rng: random.Random, tool_scale: float, fresh: bool) -> list[CallSpec]:
        calls: list[CallSpec] = []
        node: int | None = None  # the expansion call the next round grows from (None: root)
        depth = 0
        joins: tuple[int, ...] = ()  # evaluations of the previous round
        for _ in range(self.calls.sample(rng)):
            context = _context(calls, node, fresh)
            expansions = []
            for _ in range(self.width):
                think = self._think(rng, tool_scale) if joins else 0.0
                expand = self._call(
                    len(calls), rng, context=context, parents=joins, prefix_of=node, think=think
                )
                calls.append(expand)
                expansions.append(expand.index)
            evaluations = []
            for e in expansions:
                value = self._call(
                    len(calls),
                    rng,
                    context=_context(calls, e, fresh),
                    parents=(e,),
                    prefix_of=e,
                    think=self._think(rng, tool_scale),
                )
                calls.append(value)
                evaluations.append(value.index)
            joins = tuple(evaluations)
            depth += 1
            node = None if depth >= self.max_depth else rng.choice(expansions)
            depth %= self.max_depth
        return calls


def _context(calls: Sequence[CallSpec], index: int | None, fresh: bool) -> int:
    if index is None or fresh:
        return 0
    return calls[index].prompt_tokens + calls[index].output_tokens


def paper_workloads() -> dict[str, WorkloadSpec]:
    """The paper's workloads (AUTELLIX.md table). Means are the paper's; sigmas, maxima other
    than the paper's, tool times and the tree's shape are ours (docs/simulator.md)."""
    return {
        "chatbot": WorkloadSpec(
            "chatbot",
            "chain",
            calls=LengthDist(6.66, 1.0, high=80),
            new_tokens=LengthDist(255.65, 1.0, high=4096),
            output_tokens=LengthDist(276.81, 1.0, high=2048),
            tool_time_s=1.0,
        ),
        "react": WorkloadSpec(
            "react",
            "chain",
            calls=LengthDist(10.75, 0.8, high=70),
            new_tokens=LengthDist(735.06, 0.8, high=8192),
            output_tokens=LengthDist(34.14, 0.7, high=512),
            tool_time_s=0.5,
        ),
        # 2 x 5 calls per round: 15.971 rounds on average make the paper's 159.71 calls.
        "lats": WorkloadSpec(
            "lats",
            "tree",
            calls=LengthDist(15.971, 0.5, high=40),
            new_tokens=LengthDist(467.24, 0.6, high=4096),
            output_tokens=LengthDist(72.64, 0.7, high=1024),
            tool_time_s=0.25,
        ),
    }


WORKLOAD_NAMES = ("chatbot", "react", "lats", "mixed")


def with_sigma(
    specs: Mapping[str, WorkloadSpec], name: str, scale: float
) -> dict[str, WorkloadSpec]:
    """``specs`` with workload ``name``'s lognormal sigmas (calls per program, new tokens,
    output tokens) times ``scale``, their means kept: the length spread the bench sweeps
    (``--sigma``). LAS-style orders gain more the more program sizes vary."""
    if scale < 0:
        raise ValueError("the sigma scale must not be negative")
    out = dict(specs)
    spec = out[name]

    def scaled(d: LengthDist) -> LengthDist:
        return LengthDist(d.mean, d.sigma * scale, high=d.high, low=d.low)

    out[name] = dataclasses.replace(
        spec,
        calls=scaled(spec.calls),
        new_tokens=scaled(spec.new_tokens),
        output_tokens=scaled(spec.output_tokens),
    )
    return out


def generate(
    name: str,
    *,
    rate: float,
    programs: int,
    seed: int = 0,
    tool_scale: float = 1.0,
    fresh: bool = False,
    specs: Mapping[str, WorkloadSpec] | None = None,
) -> list[ProgramSpec]:
    """``programs`` programs of workload ``name`` (a key of ``specs``, or "mixed": an equal
    mix of them all, in random order) arriving by a Poisson process of ``rate`` per second.
    ``fresh``: prompts are only their new tokens (the paper's per-call means as sent)."""
    if rate <= 0 or programs < 0 or tool_scale < 0:
        raise ValueError("rate must be positive, programs and tool_scale non-negative")
    specs = specs if specs is not None else paper_workloads()
    if name == "mixed":
        kinds = sorted(specs)
        order = [kinds[i % len(kinds)] for i in range(programs)]
    elif name in specs:
        order = [name] * programs
    else:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join([*specs, 'mixed'])}")
    content = random.Random(f"{seed}:content:{name}")
    content.shuffle(order)
    gaps = random.Random(f"{seed}:arrivals")
    out: list[ProgramSpec] = []
    t = 0.0
    for i, kind in enumerate(order):
        t += gaps.expovariate(1.0) / rate  # unit gaps scaled: same pattern at every rate
        out.append(specs[kind].program(f"p{i}", t, content, tool_scale, fresh))
    return out


def from_trace(records: Iterable[TraceRecord]) -> list[ProgramSpec]:
    """Programs replayed from a recorded trace: each program's calls in arrival order, with
    their parents as recorded (else the previous call), the gap after the parents' finish as
    tool time, and the previous context as shared prefix when the prompt is at least as long.
    Times are shifted so that the first program arrives at 0."""
    by_program: dict[str, list[TraceRecord]] = {}
    for record in records:
        by_program.setdefault(record.program, []).append(record)
    if not by_program:
        return []
    start = min(r.arrival for rs in by_program.values() for r in rs)
    programs = [
        _replay(pid, sorted(rs, key=lambda r: (r.arrival, r.call)), start)
        for pid, rs in by_program.items()
    ]
    programs.sort(key=lambda p: (p.arrival, p.id))
    return programs


def _replay(pid: str, records: Sequence[TraceRecord], start: float) -> ProgramSpec:
    index = {r.call: i for i, r in enumerate(records)}
    calls: list[CallSpec] = []
    for i, r in enumerate(records):
        known = tuple(index[p] for p in r.parents if p in index and index[p] < i)
        parents = known if r.parents else ((i - 1,) if i else ())
        ready = max((records[p].finished for p in parents), default=records[0].arrival)
        prefix = parents[-1] if parents else None
        context = (
            records[prefix].prompt_tokens + records[prefix].completion_tokens
            if prefix is not None
            else 0
        )
        shared = context if prefix is not None and r.prompt_tokens > context else 0
        calls.append(
            CallSpec(
                i,
                max(1, r.prompt_tokens),
                max(1, r.completion_tokens),
                parents,
                max(0.0, r.arrival - ready),
                prefix if shared else None,
                shared,
            )
        )
    return ProgramSpec(pid, "trace", records[0].arrival - start, tuple(calls))
