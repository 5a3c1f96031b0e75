"""How many calls an engine runs at once: the admission cap (priority-ordered admission).

Pure and synchronous like the rest of the core: every measurement and ``now`` come from the
caller. ``CapConfig`` is the setting every user of the core reads (the live gate, the
simulator's engine, the vLLM plug-in) and ``CapController`` turns measurements into a cap, so
the three share one method.

Why a cap helps: a continuous-batching step over n sequences takes about ``a + b*n`` seconds
(``a``: the weights read once per step; ``b``: one sequence's share, its context included).
Token throughput ``n / (a + b*n)`` therefore grows almost linearly while ``b*n`` is small
against ``a`` and flattens after. Running only the best-ranked calls below that knee costs the
engine little throughput, and lets the policy's order decide who finishes first.

The method (``CapController``) is a Vegas-style concurrency limit on step time. TCP Vegas
compares the throughput a window would get at the path's base round trip (``cwnd/BaseRTT``)
with the throughput it actually gets (``cwnd/RTT``) and keeps the window where the two part by
a set amount. Here the base step time is the intercept ``a`` and the actual step time
``a + b*n`` is measured, so the two are fitted from measured (running, step time) pairs
(exponentially weighted least squares), and the limit is the larger of:

- the knee ``knee * a / b``: the running count where actual throughput is half the "expected"
  (every sequence at the base step time). With ``knee = 1`` this maximises Kleinrock's power,
  throughput over step time, ``n / (a + b*n)**2``;
- the demand point: the smallest n whose throughput ``n / (a + b*n)`` covers ``headroom``
  times the tokens per second the engine delivered lately. When the cap is too small the
  engine delivers all it can at that cap, so the demand point rises by about ``headroom``
  each interval until the engine keeps up; when load falls it sinks back to the knee.

The cap moves towards that target once per ``interval_s``, up at most ``max_up`` times and
down at most ``max_down`` times per interval (a bounded, monotone step: no oscillation
growing by itself), and stays within ``[k_min, k_max]``. Until the samples span enough
running counts to fit a slope, the cap stays where it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

CapMode = Literal["off", "fixed", "adaptive"]


@dataclass(frozen=True, slots=True)
class CapConfig:
    """mode: "off" (the engine's own limit only), "fixed" (at most ``k`` calls run) or
    "adaptive" (``CapController`` chooses k from measured step times or tokens/s, between
    ``k_min`` and ``k_max``; ``k`` is its starting point).
    k: the fixed cap, or the adaptive controller's first value (None: ``k_max``, or the
        engine's own limit).
    k_min, k_max: the adaptive cap's bounds (``k_max`` None: the engine's own limit).
    knee: the knee as a multiple of ``a/b`` (1: step time twice its base, Kleinrock's power
        optimum).
    headroom: throughput kept above the delivered demand (1.25: the capped engine runs at most
        80% busy on its running set, so a burst does not build a backlog faster than it
        drains).
    interval_s: seconds between the controller's moves.
    window_s: time constant of the measurements' exponential forgetting.
    max_up, max_down: the most the cap grows or shrinks in one move (factors).
    The constants' values come from simulation (docs/gate.md, "Admission cap")."""

    mode: CapMode = "off"
    k: int | None = None
    k_min: int = 4
    k_max: int | None = None
    knee: float = 1.0
    headroom: float = 1.25
    interval_s: float = 2.0
    window_s: float = 30.0
    max_up: float = 1.5
    max_down: float = 0.85

    def __post_init__(self) -> None:
        if self.mode not in ("off", "fixed", "adaptive"):
            raise ValueError(f"cap mode must be off, fixed or adaptive, not {self.mode!r}")
        if self.mode == "fixed" and (self.k is None or self.k < 1):
            raise ValueError("a fixed cap needs k >= 1")
        if self.k is not None and self.k < 1:
            raise ValueError("k must be at least 1")
        if self.k_min < 1 or (self.k_max is not None and self.k_max < self.k_min):
            raise ValueError("cap bounds need 1 <= k_min <= k_max")
        if self.knee <= 0 or self.headroom < 1 or self.interval_s <= 0 or self.window_s <= 0:
            raise ValueError("knee and the times must be positive, headroom at least 1")
        if self.max_up < 1 or not 0 < self.max_down <= 1:
            raise ValueError("max_up must be >= 1 and max_down in (0, 1]")

    def initial(self, limit: int) -> int | None:
        """The cap to start with on an engine whose own limit is ``limit`` (None: none)."""
        if self.mode == "off":
            return None
        if self.mode == "fixed":
            assert self.k is not None
            return min(self.k, limit)
        top = min(self.k_max or limit, limit)
        return max(min(self.k or top, top), min(self.k_min, top))


@dataclass(frozen=True, slots=True)
class Fit:
    """The fitted step time ``base_s + per_seq_s * n + per_prefill_s * p`` (n sequences
    decoding, p prompt tokens prefilled in the step), the decode tokens/s delivered and the
    share of time spent prefilling."""

    base_s: float
    per_seq_s: float
    demand_tps: float
    per_prefill_s: float = 0.0
    prefill_share: float = 0.0


# The weighted sums the least-squares fit keeps: weight, then weight times n, p, n*n, p*p,
# n*p, y, n*y, p*y (y: step time).
_W, _N, _P, _NN, _PP, _NP, _Y, _NY, _PY = range(9)


class CapController:
    """The adaptive cap of one engine (module docstring). Feed it ``observe_step`` (one step
    or a stretch of equal decode steps) or ``observe_rate`` (tokens/s at a known running
    count), and call ``update(now)``, which returns the cap (at most every ``interval_s`` it
    moves). Fixed and off modes take no measurements: ``k`` is their cap.

    Prefill: a step that also prefills p prompt tokens takes longer by ``c*p`` whatever the
    cap, so the fit separates it when the caller says how many (the simulator and the vLLM
    plug-in do); the time it takes is then not available to decodes, and the demand point
    asks for ``headroom * demand / (1 - prefill share)``. Where only tokens/s are known (the
    live gate), prefill is folded into the fitted ``a`` and ``b``."""

    __slots__ = (
        "_decode",
        "_demand",
        "_demand_at",
        "_last_decay",
        "_last_move",
        "_prefill",
        "_prefill_rate",
        "_sums",
        "config",
        "fit",
        "k",
        "limit",
        "moves",
    )

    def __init__(self, config: CapConfig, *, limit: int, now: float = 0.0) -> None:
        self.config = config
        self.limit = limit
        self.k = config.initial(limit)
        self.moves = 0
        self.fit: Fit | None = None
        self._sums = [0.0] * 9
        self._last_decay = self._last_move = self._demand_at = now
        self._decode = self._prefill = 0.0
        self._demand: float | None = None
        self._prefill_rate = 0.0

    @property
    def adaptive(self) -> bool:
        return self.config.mode == "adaptive"

    def observe_step(
        self, running: int, step_s: float, now: float, *, steps: int = 1, prefill: int = 0
    ) -> None:
        """``steps`` engine steps, each with ``running`` sequences decoding a token and
        ``prefill`` prompt tokens prefilled in all (a stretch of equal decode steps has none),
        took ``step_s`` seconds each; the last ended at ``now``."""
        if not self.adaptive or step_s <= 0 or steps < 1 or (running < 1 and prefill < 1):
            return
        self._add(running, prefill / steps, step_s, step_s * steps, now)
        self._decode += running * steps
        self._prefill += prefill

    def observe_rate(self, running: float, tokens_per_s: float, span_s: float, now: float) -> None:
        """Over the last ``span_s`` seconds, ``running`` calls (on average) produced
        ``tokens_per_s``: a step took ``running / tokens_per_s`` (each running call gets one
        token per step)."""
        if not self.adaptive or span_s <= 0:
            return
        if running >= 1 and tokens_per_s > 0:
            self._add(running, 0.0, running / tokens_per_s, span_s, now)
        self._decode += max(tokens_per_s, 0.0) * span_s

    def update(self, now: float) -> int | None:
        """The cap now (None: uncapped); adaptive mode moves it once per ``interval_s``."""
        config = self.config
        if not self.adaptive or now - self._last_move < config.interval_s:
            return self.k
        self._decay(now)
        span = now - self._demand_at
        if span > 0:
            decode, prefill = self._decode / span, self._prefill / span
            if self._demand is None:
                self._demand, self._prefill_rate = decode, prefill
            else:
                alpha = 1.0 - math.exp(-span / config.window_s)
                self._demand += alpha * (decode - self._demand)
                self._prefill_rate += alpha * (prefill - self._prefill_rate)
            self._decode = self._prefill = 0.0
            self._demand_at = now
        self._last_move = now
        demand = self._demand or 0.0
        line = self._line()
        if line is None and self.fit is not None:  # no new slope: keep the last, follow demand
            line = (self.fit.base_s, self.fit.per_seq_s, self.fit.per_prefill_s)
        if line is None or self.k is None:
            return self.k
        a, b, c = line
        self.fit = Fit(a, b, demand, c, min(c * self._prefill_rate, 1.0))
        target = self.target(self.fit)
        k = self.k
        if target > k:
            k = min(target, max(k + 1, math.floor(k * config.max_up)))
        elif target < k:
            k = max(target, min(k - 1, math.ceil(k * config.max_down)))
        if k != self.k:
            self.moves += 1
            self.k = k
        return self.k

    def target(self, fit: Fit) -> int:
        """The cap the fitted line and demand call for (module docstring), within bounds."""
        config = self.config
        top = min(config.k_max or self.limit, self.limit)
        a, b = fit.base_s, fit.per_seq_s
        knee = config.knee * a / b
        free = 1.0 - fit.prefill_share  # the share of time left for decoding
        need = config.headroom * fit.demand_tps / free if free > 0 else math.inf
        demand = math.inf if need * b >= 1.0 else need * a / (1.0 - need * b)
        want = max(knee, demand)
        k = top if want >= top else math.ceil(want)
        return max(min(config.k_min, top), min(k, top))

    # -- internals ---------------------------------------------------------------------------

    def _add(self, n: float, p: float, y: float, w: float, now: float) -> None:
        self._decay(now)
        s = self._sums
        s[_W] += w
        s[_N] += w * n
        s[_P] += w * p
        s[_NN] += w * n * n
        s[_PP] += w * p * p
        s[_NP] += w * n * p
        s[_Y] += w * y
        s[_NY] += w * n * y
        s[_PY] += w * p * y

    def _decay(self, now: float) -> None:
        dt = now - self._last_decay
        if dt <= 0:
            return
        f = math.exp(-dt / self.config.window_s)
        self._sums = [x * f for x in self._sums]
        self._last_decay = now

    def _line(self) -> tuple[float, float, float] | None:
        """Weighted least squares of step time on the running count and the prefilled
        tokens, (a, b, c); c is 0 when the steps seen prefilled (almost) equally. None while
        the running counts do not spread enough to fix a slope (a standard deviation under
        one sequence), or the line does not rise from a positive base."""
        s = self._sums
        w = s[_W]
        if w <= 0:
            return None
        mn, mp, my = s[_N] / w, s[_P] / w, s[_Y] / w
        vnn = s[_NN] / w - mn * mn
        vpp = s[_PP] / w - mp * mp
        vnp = s[_NP] / w - mn * mp
        cny = s[_NY] / w - mn * my
        cpy = s[_PY] / w - mp * my
        if vnn < 1.0:
            return None
        det = vnn * vpp - vnp * vnp
        if vpp < 1.0 or det <= 1e-9 * vnn * vpp:
            b, c = cny / vnn, 0.0
            a = my - b * mn  # prefill folded into the base
        else:
            b = (cny * vpp - cpy * vnp) / det
            c = max((cpy * vnn - cny * vnp) / det, 0.0)
            a = my - b * mn - c * mp
        if b <= 0 or a <= 0:
            return None
        return a, b, c
