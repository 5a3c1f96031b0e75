"""The admission cap on a simulated engine: the core's ``CapController`` fed by the engine
model's own step times, applied as the model's ``seq_limit``.

With a cap the engine admits a waiting call only while fewer than k run; the policy queue's
``victims`` then lets a better-ranked waiting call take the place of a worse running one under
the core's margin and quantum (as without a cap, only now the running set is full sooner).
When an adaptive cap shrinks below the calls already running, none is preempted for it: the
running set drains to the cap as calls finish.

It also integrates what a reader needs to explain a point: the mean calls running and
waiting over busy time, and the mean cap.
"""

from __future__ import annotations

from proxy.core.concurrency import CapConfig, CapController
from proxy.sim.engine.engine import EngineModel, StepResult


class EngineCap:
    """One engine's cap. ``stepped`` after every step (or stretch) that ran."""

    __slots__ = ("busy_s", "cap_area", "controller", "model", "running_area", "waiting_area")

    def __init__(self, config: CapConfig, model: EngineModel, now: float = 0.0) -> None:
        self.model = model
        self.controller = CapController(config, limit=model.max_num_seqs, now=now)
        self.busy_s = self.running_area = self.waiting_area = self.cap_area = 0.0
        self._apply(self.controller.k)

    def stepped(self, step: StepResult, now: float) -> None:
        model, controller = self.model, self.controller
        duration = step.duration
        n = step.num_decodes // step.steps if step.steps > 1 else len(step.emitted)
        self.busy_s += duration
        self.running_area += model.num_running * duration
        self.waiting_area += model.num_waiting * duration
        self.cap_area += model.seq_limit * duration
        if controller.adaptive:
            controller.observe_waiting(model.num_waiting, duration)
            controller.observe_step(
                n, duration / step.steps, now, steps=step.steps, prefill=step.num_prefill_tokens
            )
            self._apply(controller.update(now))

    def _apply(self, k: int | None) -> None:
        top = self.model.max_num_seqs
        self.model.seq_limit = top if k is None else max(1, min(k, top))

    @property
    def mean_running(self) -> float:
        return self.running_area / self.busy_s if self.busy_s else 0.0

    @property
    def mean_waiting(self) -> float:
        return self.waiting_area / self.busy_s if self.busy_s else 0.0

    @property
    def mean_cap(self) -> float:
        return self.cap_area / self.busy_s if self.busy_s else float(self.model.seq_limit)
