"""An engine model with round numbers, so that its schedules can be checked by hand, and small
helpers to drive it: shared by the tests of the engine model and of its decode stretches."""

from __future__ import annotations

from proxy.sim.engine.cost import CostModel
from proxy.sim.engine.engine import EngineModel, EngineRequest

# Round numbers so that step times can be checked by hand: 1 s per step, 0.1 s per decode,
# 0.01 s per prefilled token, nothing for context.
SIMPLE = CostModel(
    base_s=1.0,
    decode_per_seq_s=0.1,
    decode_per_kv_token_s=0.0,
    prefill_per_token_s=0.01,
    prefill_attn_per_pair_s=0.0,
)


def model(**kwargs: object) -> EngineModel:
    options: dict[str, object] = {
        "cost": SIMPLE,
        "max_num_seqs": 4,
        "kv_capacity_tokens": 64,
        "max_num_batched_tokens": 8,
        "block_size": 4,
    }
    options.update(kwargs)
    return EngineModel(**options)  # type: ignore[arg-type]


def req(
    rid: str,
    prompt: int,
    target: int | None,
    *,
    max_tokens: int = 100,
    priority: int = 0,
    arrival: float = 0.0,
) -> EngineRequest:
    return EngineRequest(
        id=rid,
        prompt_tokens=prompt,
        target_tokens=target,
        max_tokens=max_tokens,
        priority=priority,
        arrival=arrival,
    )


def run(engine: EngineModel, now: float = 0.0) -> list[tuple[float, list[str], list[str]]]:
    """Step until idle; (end, emitted ids, finished ids) per step."""
    out = []
    while engine.has_work:
        result = engine.step(now)
        now = result.end
        out.append((now, [r.id for r in result.emitted], [r.id for r in result.finished]))
    return out
