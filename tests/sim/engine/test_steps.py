"""Decode stretches (``EngineModel.decode_stretch``, ``steps.py``): several decode-only steps
run at once are exactly the steps they replace, and stop where one of those steps would differ."""

from __future__ import annotations

from proxy.sim.engine.engine import EngineModel
from tests.sim.engine.by_hand import model, req


def _decoding(**kwargs: object) -> EngineModel:
    """Two requests past their prefill: A has 9 tokens to go, B 5 (its fifth finishes it)."""
    engine = model(max_num_batched_tokens=16, kv_capacity_tokens=64, **kwargs)
    engine.add(req("a", prompt=6, target=10), 0.0)
    engine.add(req("b", prompt=5, target=6), 0.0)
    engine.step(0.0)
    return engine


def test_a_decode_stretch_is_the_steps_it_replaces() -> None:
    fast, slow = _decoding(), _decoding()
    stretch = fast.decode_stretch(1.0, until=100.0)
    assert stretch is not None
    # Up to the step before B's last: 4 steps, each 1 + 2 x 0.1 (SIMPLE has no context term).
    assert (stretch.steps, stretch.num_decodes, stretch.emitted) == (4, 8, ())
    end = 1.0
    for _ in range(4):
        step = slow.step(end)
        assert step.num_decodes == 2
        assert not step.num_prefill_tokens
        end = step.end
    assert stretch.end == end  # the same float, added step by step
    state = [(r.num_output, r.num_computed, r.num_blocks) for r in fast.running]
    assert state == [(r.num_output, r.num_computed, r.num_blocks) for r in slow.running]
    assert fast.kv_usage == slow.kv_usage
    # What is left is one step that finishes B: no stretch, a plain step.
    assert fast.decode_stretch(end, until=100.0) is None
    assert [r.id for r in fast.step(end).finished] == ["b"]


def test_a_decode_stretch_stops_for_events_admissions_and_kv() -> None:
    # The caller's next event at 2.5: steps start at 1.0, 2.2 and 3.4; the third is left out.
    stretch = _decoding().decode_stretch(1.0, until=2.5)
    assert stretch is not None
    assert stretch.steps == 2
    assert _decoding().decode_stretch(1.0, until=1.5) is None  # only one step before it
    # A waiting request that could be admitted joins at the next step: no stretch.
    engine = _decoding()
    engine.add(req("c", prompt=4, target=1), 1.0)
    assert engine.decode_stretch(1.0, until=100.0) is None
    # One that cannot (no sequence slot) does not stop it.
    engine = _decoding(max_num_seqs=2)
    engine.add(req("c", prompt=4, target=1), 1.0)
    assert engine.decode_stretch(1.0, until=100.0) is not None
    # KV: 20 tokens (5 blocks of 4) hold A (6 computed, 2 blocks) and B (5, 2 blocks). A takes
    # the fifth block in the third step; the stretch ends before the fourth, where B needs a
    # sixth and the engine would preempt.
    engine = model(max_num_batched_tokens=16, kv_capacity_tokens=20)
    engine.add(req("a", prompt=6, target=10), 0.0)
    engine.add(req("b", prompt=5, target=8), 0.0)
    engine.step(0.0)
    stretch = engine.decode_stretch(1.0, until=100.0)
    assert stretch is not None
    assert stretch.steps == 3
    assert engine.kv_usage == 1.0
    assert [r.id for r in engine.step(stretch.end).preempted] == ["b"]
