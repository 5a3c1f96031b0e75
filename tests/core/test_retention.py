"""The core's KV retention settings and the TTL learned from each program's gaps."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.retention import TTL_PRIOR_S, GapLearner, RetentionConfig, quantile

# -- config -------------------------------------------------------------------------------


def test_config_checks_its_fields() -> None:
    with pytest.raises(ValueError, match="evict"):
        RetentionConfig(evict="mru")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        RetentionConfig(ttl=-1.0)
    with pytest.raises(ValueError, match="ttl"):
        RetentionConfig(ttl="forever")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_pinned_share"):
        RetentionConfig(max_pinned_share=1.5)
    assert not RetentionConfig().active
    assert RetentionConfig(evict="rank").active
    assert RetentionConfig(ttl="learned").holds
    assert not RetentionConfig(ttl="learned", max_pinned_share=0.0).holds


def test_config_parses_text_settings() -> None:
    assert RetentionConfig.parse("rank", "learned") == RetentionConfig("rank", "learned")
    assert RetentionConfig.parse("lru", "none").ttl is None
    assert RetentionConfig.parse("LRU", "2.5", 0.1) == RetentionConfig("lru", 2.5, 0.1)
    with pytest.raises(ValueError, match="ttl"):
        RetentionConfig.parse("rank", "soon")
    with pytest.raises(ValueError, match="evict"):
        RetentionConfig.parse("random", "none")


# -- learned TTL -------------------------------------------------------------------------


def test_quantile_interpolates() -> None:
    assert quantile([1.0, 2.0, 3.0, 4.0, 5.0], 0.5) == 3.0
    assert quantile([0.0, 10.0], 0.9) == pytest.approx(9.0)
    with pytest.raises(ValueError, match="no values"):
        quantile([], 0.5)


def test_ttl_off_fixed_and_prior() -> None:
    assert GapLearner(RetentionConfig()).ttl("p") is None
    assert GapLearner(RetentionConfig(ttl=3.0)).ttl("p") == 3.0
    assert GapLearner(RetentionConfig(ttl="learned")).ttl("p") == TTL_PRIOR_S


def test_ttl_learns_the_programs_own_gaps() -> None:
    learner = GapLearner(RetentionConfig(ttl="learned"))
    t = 0.0
    for gap in (1.0, 2.0, 3.0, 4.0, 5.0):
        learner.finished("p", t)
        t += gap
        assert learner.arrived("p", t) == gap
    assert learner.ttl("p") == pytest.approx(quantile([1, 2, 3, 4, 5], 0.9))
    # A new program starts from the pooled gaps of the others, not from the fixed prior.
    assert learner.ttl("q") == learner.ttl("p")
    # A call arriving with no finish before it closes no gap.
    assert learner.arrived("q", 9.0) is None


def test_learned_ttl_is_capped() -> None:
    learner = GapLearner(RetentionConfig(ttl="learned", ttl_max_s=10.0))
    for i in range(5):
        learner.finished("p", i * 1000.0)
        learner.arrived("p", i * 1000.0 + 500.0)
    assert learner.ttl("p") == 10.0


@given(st.lists(st.floats(0.0, 100.0), min_size=1, max_size=50))
def test_learned_ttl_stays_within_the_gaps_and_the_cap(gaps: list[float]) -> None:
    learner = GapLearner(RetentionConfig(ttl="learned"))
    t = 0.0
    for gap in gaps:
        learner.finished("p", t)
        t += gap
        learner.arrived("p", t)
    ttl = learner.ttl("p")
    assert ttl is not None
    assert 0.0 <= ttl <= 30.0
    if len(gaps) >= 3:
        recent = gaps[-16:]
        assert min(min(recent), 30.0) - 1e-9 <= ttl <= max(recent) + 1e-9
