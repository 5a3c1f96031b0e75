"""The admission cap's settings and its Vegas-style controller, on a synthetic engine whose step
takes ``a + b*n`` seconds."""

from __future__ import annotations

import random

import pytest

from proxy.core.concurrency import CapConfig, CapController, for_policy

A, B = 0.010, 0.0003  # the knee a/b is at 33.3 sequences; the line's ceiling 3,333 tokens/s


def drive(
    ctl: CapController,
    demand: list[tuple[float, float]],
    *,
    tokens_per_call: int = 200,
    noise: float = 0.0,
    seed: int = 0,
    t0: float = 0.0,
    calls: list[int] | None = None,
) -> tuple[float, list[int], list[int]]:
    """Run the synthetic engine: calls of ``tokens_per_call`` tokens arrive at ``rate``
    tokens/s for each ``(duration, rate)`` of ``demand``; each step runs the first ``ctl.k``
    calls, the others wait. Returns the end time, and the cap and the calls in the system at
    the end of every second."""
    rng = random.Random(seed)
    now, owed = t0, 0.0
    left = calls if calls is not None else []
    caps: list[int] = []
    backlog: list[int] = []
    next_tick = t0 + 1.0
    for duration, rate in demand:
        end = now + duration
        while now < end:
            k = ctl.update(now)
            n = len(left) if k is None else min(k, len(left))
            step = A + B * n if n else 0.005
            step *= 1.0 + noise * (rng.random() - 0.5)
            ctl.observe_waiting(len(left) - n, step)
            if n:
                for i in range(n):
                    left[i] -= 1
                left[:] = [x for x in left if x > 0]
                ctl.observe_step(n, step, now + step)
            now += step
            owed += rate * step / tokens_per_call
            while owed >= 1.0:
                owed -= 1.0
                left.append(tokens_per_call)
            if now >= next_tick:
                next_tick += 1.0
                caps.append(ctl.k or 0)
                backlog.append(len(left))
    return now, caps, backlog


def test_fixed_and_off_modes_need_no_measurements() -> None:
    assert CapController(CapConfig(), limit=256).update(5.0) is None
    fixed = CapController(CapConfig(mode="fixed", k=32), limit=256)
    fixed.observe_step(10, 0.02, 1.0)
    assert fixed.update(100.0) == 32
    assert CapController(CapConfig(mode="fixed", k=512), limit=256).k == 256


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="fixed cap"):
        CapConfig(mode="fixed")
    with pytest.raises(ValueError, match="bounds"):
        CapConfig(mode="adaptive", k_min=8, k_max=4)
    with pytest.raises(ValueError, match="alpha < beta"):
        CapConfig(mode="adaptive", alpha=0.5, beta=0.3)
    with pytest.raises(ValueError, match="cap mode"):
        CapConfig(mode="sometimes")  # type: ignore[arg-type]


def test_adaptive_starts_at_k_or_the_engine_limit() -> None:
    assert CapController(CapConfig(mode="adaptive"), limit=256).k == 256
    assert CapController(CapConfig(mode="adaptive", k_max=64), limit=256).k == 64
    assert CapController(CapConfig(mode="adaptive", k=40), limit=256).k == 40


def test_light_load_settles_on_the_fitted_knee() -> None:
    ctl = CapController(CapConfig(mode="adaptive"), limit=256)
    _, caps, backlog = drive(ctl, [(300.0, 1000.0)])
    assert ctl.fit is not None
    assert ctl.fit.base_s == pytest.approx(A, rel=0.02)
    assert ctl.fit.per_seq_s == pytest.approx(B, rel=0.05)
    assert caps[-1] == 34  # ceil(a/b): below it a cap would only delay calls
    assert max(backlog[-100:]) < 34  # nothing much waits


def test_heavy_load_keeps_a_small_bounded_queue() -> None:
    # 2,000 tokens/s needs 50 running (n / (a + b n) = 2000): the cap must find about that.
    ctl = CapController(CapConfig(mode="adaptive"), limit=256)
    _, caps, backlog = drive(ctl, [(400.0, 2000.0)])
    settled = caps[-150:]
    assert min(settled) >= 44  # about 50: the queue tells it when it falls short
    assert max(settled) <= 90
    # The engine keeps up: the calls in the system do not grow over the last minutes.
    assert max(backlog[-60:]) <= max(backlog[-150:-90]) + 40
    assert max(backlog[-150:]) < 200


def test_reacts_to_load_rising_and_falling() -> None:
    ctl = CapController(CapConfig(mode="adaptive"), limit=256)
    calls: list[int] = []
    now, caps, _ = drive(ctl, [(200.0, 1000.0)], calls=calls)
    assert caps[-1] == 34
    now, caps, backlog = drive(ctl, [(300.0, 2500.0)], t0=now, calls=calls)
    # 2,500 tokens/s needs 100 running.
    assert caps[-1] >= 100
    assert max(backlog[-60:]) < 250  # it caught up rather than letting the queue run away
    _, caps, _ = drive(ctl, [(300.0, 1000.0)], t0=now, calls=calls)
    assert caps[-1] == 34  # back to the knee


def test_respects_bounds() -> None:
    ctl = CapController(CapConfig(mode="adaptive", k_min=50, k_max=60), limit=256)
    _, caps, _ = drive(ctl, [(100.0, 500.0), (100.0, 3000.0)])
    assert caps
    assert all(50 <= k <= 60 for k in caps)
    small = CapController(CapConfig(mode="adaptive", k_min=4), limit=16)
    _, caps, _ = drive(small, [(100.0, 3000.0)])
    assert max(caps) <= 16


def test_noisy_step_times_do_not_make_it_oscillate() -> None:
    ctl = CapController(CapConfig(mode="adaptive"), limit=256)
    _, caps, backlog = drive(ctl, [(600.0, 2000.0)], noise=0.4, seed=3)
    settled = caps[-300:]
    assert min(settled) >= 45  # 50 keep up; the noise may dip it a little
    assert max(settled) <= 100  # a band around it, not a growing swing
    assert max(backlog[-300:]) < 200


def test_no_slope_without_spread_in_running_counts() -> None:
    ctl = CapController(CapConfig(mode="adaptive", k=40), limit=256)
    t = 0.0
    for _ in range(2000):
        t += A + B * 40
        ctl.observe_step(40, A + B * 40, t)
        ctl.update(t)
    assert ctl.fit is None  # nothing to fit a line to
    assert ctl.k == 40  # and no waiting measured: it stays put
    for _ in range(2000):
        t += A + B * 40
        ctl.observe_waiting(0, A + B * 40)
        ctl.update(t)
    assert ctl.k == 8  # nobody waits: down to k_min, the only floor it knows


def test_rate_samples_fit_the_same_line() -> None:
    ctl = CapController(CapConfig(mode="adaptive"), limit=256)
    t = 0.0
    for i in range(400):
        n = 10 + (i * 7) % 80
        t += 0.5
        ctl.observe_rate(n, n / (A + B * n), 0.5, t)
        ctl.update(t)
    assert ctl.fit is not None
    assert ctl.fit.base_s == pytest.approx(A, rel=0.01)
    assert ctl.fit.per_seq_s == pytest.approx(B, rel=0.01)


def test_auto_turns_the_cap_on_only_where_it_helps() -> None:
    class Named:
        def __init__(self, name: str, arrival_order: bool = False) -> None:
            self.name, self.arrival_order = name, arrival_order

    auto = CapConfig(mode="auto")
    assert for_policy(auto, Named("srpt")).mode == "adaptive"
    assert for_policy(auto, Named("plas")).mode == "off"
    assert for_policy(auto, Named("plas"), retains=True).mode == "adaptive"
    assert for_policy(auto, Named("fcfs", True), retains=True).mode == "off"
    assert CapController(auto, limit=256).k is None  # unresolved auto caps nothing
    fcfs = for_policy(CapConfig(mode="adaptive"), Named("fcfs", arrival_order=True))
    assert fcfs.alpha == 0.0
    assert for_policy(CapConfig(mode="fixed", k=3), Named("fcfs", True)).k == 3
