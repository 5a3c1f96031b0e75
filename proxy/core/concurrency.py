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

The method (``CapController``) is a Vegas-style concurrency limit. TCP Vegas keeps a few
packets, between ``alpha`` and ``beta``, queued at the bottleneck: enough that the link never
idles, few enough that the queue adds little delay: it grows the window by one packet per
round trip while fewer than ``alpha`` are queued and shrinks it while more than ``beta`` are.
Here the engine's running set is the window and the backlog kept in a band is the calls
waiting for it, measured directly (time-averaged over each interval). That backlog sits on the
other side of the limit, so the signs turn round: the cap rises while more than ``beta * k``
calls wait (the engine falls behind and needs a larger batch, hence more throughput) and
shrinks while fewer than ``alpha * k`` wait (it keeps up with room to spare). A small standing
queue is what gives the policy a choice; a bounded one is what keeps the engine steady.

The floor comes from the step-time curve: the cap never goes below the knee ``knee * a / b``,
fitted from measured (running, prefilled tokens, step time) samples by exponentially weighted
least squares. Below the knee another running call slows the others by less than ``b*n/a``,
so a cap there would only make calls wait that the engine could run almost for free. With
``knee = 1`` the knee maximises Kleinrock's power, throughput over step time,
``n / (a + b*n)**2`` (the point where actual throughput is half Vegas's "expected" throughput
at the base step time).

The cap moves once per ``interval_s``: up by ``gain`` times the excess waiting calls (at least
one, at most ``max_up`` times k), down by at most ``max_down`` times k, and stays within
``[max(knee, k_min), k_max]``. Each move is bounded and its sign follows a measured queue, so
the loop cannot oscillate with a growing swing. Until the samples span enough running counts
to fit a slope, the floor is ``k_min``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

CapMode = Literal["off", "fixed", "adaptive", "auto"]

HELPED: frozenset[str] = frozenset({"srpt"})
"""Policies that the adaptive cap measurably helps in the simulator (docs/gate.md, "Admission
cap"): ``auto`` turns it on for these."""
HELPED_WITH_RETENTION: frozenset[str] = frozenset({"plas"})
"""Policies it helps only where the engine's KV retention follows the policy (eviction by rank,
``proxy.core.retention``): without that, the calls a cap holds back lose their cached contexts
while they wait, and the re-prefills cost more than the order gains. atlas is not among them:
measured with rank retention on LATS and mixed it gained nothing (docs/gate.md)."""


@dataclass(frozen=True, slots=True)
class CapConfig:
    """mode: "off" (the engine's own limit only), "fixed" (at most ``k`` calls run),
    "adaptive" (``CapController`` chooses k from the calls waiting and measured step times,
    between ``k_min`` and ``k_max``; ``k`` is its starting point) or "auto" (adaptive for the
    policies in ``HELPED``, off for the others; ``for_policy`` decides).
    k: the fixed cap, or the adaptive controller's first value (None: ``k_max``, or the
        engine's own limit).
    k_min, k_max: the adaptive cap's bounds (``k_max`` None: the engine's own limit).
    alpha, beta: the band of calls kept waiting, as fractions of k (Vegas's alpha and beta).
    gain: calls the cap grows by per excess waiting call and interval.
    knee: the floor, as a multiple of the fitted ``a/b`` (1: Kleinrock's power optimum; 0:
        no floor but ``k_min``).
    interval_s: seconds between the controller's moves.
    window_s: time constant of the step-time samples' exponential forgetting.
    max_up, max_down: the most the cap grows or shrinks in one move (factors).
    The constants' values come from simulation (docs/gate.md, "Admission cap")."""

    mode: CapMode = "off"
    k: int | None = None
    k_min: int = 8
    k_max: int | None = None
    alpha: float = 0.1
    beta: float = 0.3
    gain: float = 0.5
    knee: float = 1.0
    interval_s: float = 2.0
    window_s: float = 60.0
    max_up: float = 1.5
    max_down: float = 0.9

    def __post_init__(self) -> None:
        if self.mode not in ("off", "fixed", "adaptive", "auto"):
            raise ValueError(f"cap mode must be off, fixed, adaptive or auto, not {self.mode!r}")
        if self.mode == "fixed" and (self.k is None or self.k < 1):
            raise ValueError("a fixed cap needs k >= 1")
        if self.k is not None and self.k < 1:
            raise ValueError("k must be at least 1")
        if self.k_min < 1 or (self.k_max is not None and self.k_max < self.k_min):
            raise ValueError("cap bounds need 1 <= k_min <= k_max")
        if not 0 <= self.alpha < self.beta or self.gain <= 0 or self.knee < 0:
            raise ValueError("the waiting band needs 0 <= alpha < beta, gain > 0, knee >= 0")
        if self.interval_s <= 0 or self.window_s <= 0:
            raise ValueError("interval_s and window_s must be positive")
        if self.max_up < 1 or not 0 < self.max_down <= 1:
            raise ValueError("max_up must be >= 1 and max_down in (0, 1]")

    def initial(self, limit: int) -> int | None:
        """The cap to start with on an engine whose own limit is ``limit`` (None: none)."""
        if self.mode in ("off", "auto"):  # auto is resolved by ``for_policy`` first
            return None
        if self.mode == "fixed":
            assert self.k is not None
            return min(self.k, limit)
        top = min(self.k_max or limit, limit)
        return max(min(self.k or top, top), min(self.k_min, top))


def for_policy(config: CapConfig, policy: object, *, retains: bool = False) -> CapConfig:
    """The cap ``config`` as ``policy`` needs it. "auto" becomes "adaptive" for a policy in
    ``HELPED``, or in ``HELPED_WITH_RETENTION`` when ``retains`` (the engine evicts cached
    contexts by the policy's rank), and "off" otherwise. A policy that admits calls in arrival order only (it
    declares ``arrival_order = True``, as fcfs does) gains nothing from a standing queue,
    which would only delay its calls: the adaptive cap then keeps none (``alpha`` 0, so it
    never shrinks) and only a fixed cap binds."""
    if config.mode == "auto":
        name = getattr(policy, "name", "")
        helped = name in HELPED or (retains and name in HELPED_WITH_RETENTION)
        config = replace(config, mode="adaptive" if helped else "off")
    if config.mode == "adaptive" and getattr(policy, "arrival_order", False):
        return replace(config, alpha=0.0)
    return config


@dataclass(frozen=True, slots=True)
class Fit:
    """The fitted step time ``base_s + per_seq_s * n + per_prefill_s * p`` (n sequences
    decoding, p prompt tokens prefilled in the step)."""

    base_s: float
    per_seq_s: float
    per_prefill_s: float = 0.0

    @property
    def knee(self) -> float:
        return self.base_s / self.per_seq_s


# The weighted sums the least-squares fit keeps: weight, then weight times n, p, n*n, p*p,
# n*p, y, n*y, p*y (y: step time).
_W, _N, _P, _NN, _PP, _NP, _Y, _NY, _PY = range(9)


class CapController:
    """The adaptive cap of one engine (module docstring). Feed it ``observe_waiting`` (calls
    waiting for the engine over a span of time) and ``observe_step`` (one step or a stretch of
    equal decode steps) or ``observe_rate`` (tokens/s at a known running count), and call
    ``update(now)``, which returns the cap (it moves at most once per ``interval_s``). Fixed
    and off modes take no measurements: ``k`` is their cap.

    A step that also prefills p prompt tokens takes longer by ``c*p`` whatever the running
    count, so the fit separates it when the caller says how many (the simulator and the vLLM
    plug-in do). Where only tokens/s are known (the live gate), prefill is folded into the
    fitted ``a`` and ``b``."""

    __slots__ = (
        "_last_decay",
        "_last_move",
        "_sums",
        "_wait_area",
        "_wait_span",
        "config",
        "fit",
        "k",
        "limit",
        "moves",
        "waiting",
    )

    def __init__(self, config: CapConfig, *, limit: int, now: float = 0.0) -> None:
        self.config = config
        self.limit = limit
        self.k = config.initial(limit)
        self.moves = 0
        self.fit: Fit | None = None
        self.waiting = 0.0  # the last interval's mean calls waiting
        self._sums = [0.0] * 9
        self._last_decay = self._last_move = now
        self._wait_area = self._wait_span = 0.0

    @property
    def adaptive(self) -> bool:
        return self.config.mode == "adaptive"

    @property
    def floor(self) -> int:
        """The least the cap may be now: ``k_min``, or the fitted knee if higher."""
        config = self.config
        top = min(config.k_max or self.limit, self.limit)
        low = config.k_min
        if self.fit is not None and config.knee > 0:
            low = max(low, math.ceil(config.knee * self.fit.knee))
        return min(low, top)

    def observe_waiting(self, waiting: float, span_s: float) -> None:
        """``waiting`` calls waited for this engine during the last ``span_s`` seconds."""
        if self.adaptive and span_s > 0:
            self._wait_area += waiting * span_s
            self._wait_span += span_s

    def observe_step(
        self, running: int, step_s: float, now: float, *, steps: int = 1, prefill: int = 0
    ) -> None:
        """``steps`` engine steps, each with ``running`` sequences decoding a token and
        ``prefill`` prompt tokens prefilled in all (a stretch of equal decode steps has none),
        took ``step_s`` seconds each; the last ended at ``now``."""
        if not self.adaptive or step_s <= 0 or steps < 1 or (running < 1 and prefill < 1):
            return
        self._add(running, prefill / steps, step_s, step_s * steps, now)

    def observe_rate(self, running: float, tokens_per_s: float, span_s: float, now: float) -> None:
        """Over the last ``span_s`` seconds, ``running`` calls (on average) produced
        ``tokens_per_s``: a step took ``running / tokens_per_s`` (each running call gets one
        token per step)."""
        if self.adaptive and span_s > 0 and running >= 1 and tokens_per_s > 0:
            self._add(running, 0.0, running / tokens_per_s, span_s, now)

    def update(self, now: float) -> int | None:
        """The cap now (None: uncapped); adaptive mode moves it once per ``interval_s``."""
        config = self.config
        if not self.adaptive or now - self._last_move < config.interval_s or self.k is None:
            return self.k
        self._last_move = now
        self._decay(now)
        line = self._line()
        if line is not None:
            self.fit = Fit(*line)
        if self._wait_span <= 0:
            return self.k
        waiting = self.waiting = self._wait_area / self._wait_span
        self._wait_area = self._wait_span = 0.0
        top = min(config.k_max or self.limit, self.limit)
        k = self.k
        if waiting > config.beta * k:  # falling behind: a larger batch, more throughput
            step = max(1, round(config.gain * (waiting - config.beta * k)))
            k = min(k + step, max(k + 1, math.floor(k * config.max_up)))
        elif waiting < config.alpha * k:  # keeping up with room to spare
            k = min(k - 1, math.ceil(k * config.max_down))
        k = max(self.floor, min(k, top))
        if k != self.k:
            self.moves += 1
            self.k = k
        return k

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
