"""The plug-in's admission cap without vLLM: its settings, and the limit it hands vLLM's
admission loop from the engine's own step timing."""

from __future__ import annotations

import pytest

from proxy.backends.vllm_plugin.cap import RunningCap, cap_from_env
from proxy.backends.vllm_plugin.victims import choose_victims
from proxy.core.concurrency import CapConfig


def test_settings_from_the_environment() -> None:
    assert cap_from_env({}).mode == "auto"  # adaptive where it helps (for_policy decides)
    assert cap_from_env({"AUTELLIX_PLUGIN_CAP": "off"}).mode == "off"
    fixed = cap_from_env({"AUTELLIX_PLUGIN_CAP": "fixed", "AUTELLIX_PLUGIN_CAP_K": "3"})
    assert (fixed.mode, fixed.k) == ("fixed", 3)
    assert cap_from_env({"AUTELLIX_PLUGIN_CAP": "Adaptive"}).mode == "adaptive"
    with pytest.raises(ValueError, match="AUTELLIX_PLUGIN_CAP_K"):
        cap_from_env({"AUTELLIX_PLUGIN_CAP": "fixed"})
    with pytest.raises(ValueError, match="AUTELLIX_PLUGIN_CAP="):
        cap_from_env({"AUTELLIX_PLUGIN_CAP": "some"})
    with pytest.raises(ValueError, match="integer"):
        cap_from_env({"AUTELLIX_PLUGIN_CAP": "fixed", "AUTELLIX_PLUGIN_CAP_K": "0"})


def test_off_and_fixed_limits() -> None:
    assert RunningCap(CapConfig(), limit=256, now=0.0).before_step(1.0, waiting=9) == 256
    fixed = RunningCap(CapConfig(mode="fixed", k=2), limit=4, now=0.0)
    assert fixed.before_step(1.0, waiting=9) == 2
    assert RunningCap(CapConfig(mode="fixed", k=9), limit=4, now=0.0).k == 4


def test_adaptive_limit_follows_the_engines_own_steps() -> None:
    # Steps of a + b*n seconds, 10 ms + 0.3 ms per decode: the knee is 34. Nothing waits, so
    # the cap comes down from vLLM's 256 to the knee.
    cap = RunningCap(CapConfig(mode="adaptive"), limit=256, now=0.0)
    now = 0.0
    for i in range(6000):
        n = 5 + (i * 13) % 100
        limit = cap.before_step(now, waiting=0)
        cap.after_step({f"r{j}": 1 for j in range(n)})
        now += 0.010 + 0.0003 * n
    assert limit == 34
    fit = cap.controller.fit
    assert fit is not None
    assert fit.per_seq_s == pytest.approx(0.0003, rel=0.05)


def test_a_capped_engine_preempts_for_a_better_waiting_call() -> None:
    # Two of two capped slots run (vLLM would have more): the level-0 call takes the place of
    # the worst running one; the level-5 call, no better than it by a level, waits.
    keys = {"run-a": (5, 0.0, "", 0), "run-b": (7, 0.0, "", 1), "new": (0, 0.0, "", 2)}
    keys["same"] = (7, 1.0, "", 3)
    victims = choose_victims(
        waiting=["new", "same"],
        running=["run-a", "run-b"],
        keys=keys,
        free_slots=2 - 2,
        passed_over=set(),
        preemptible={"run-a", "run-b"},
    )
    assert victims == [("run-b", "new")]
