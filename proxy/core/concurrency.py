"""How many calls an engine runs at once: the admission cap (issue 11, priority-ordered
admission).

Pure and synchronous like the rest of the core. ``CapConfig`` is the setting every user of the
core reads (the live gate, the simulator's engine, the vLLM plug-in); the controller that turns
measurements into a cap lives here too, so the three users share one method.

Status: the configuration only. The controller is being built (see the issue); until then a
``fixed`` cap is the only mode a user may honour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

CapMode = Literal["off", "fixed", "adaptive"]


@dataclass(frozen=True, slots=True)
class CapConfig:
    """mode: "off" (the engine's own limit only), "fixed" (at most ``k`` calls run) or
    "adaptive" (the controller chooses k from measured step times or tokens/s, between
    ``k_min`` and ``k_max``; ``k`` is its starting point).
    k: the fixed cap, or the adaptive controller's first value (None: ``k_max``)."""

    mode: CapMode = "off"
    k: int | None = None
    k_min: int = 4
    k_max: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("off", "fixed", "adaptive"):
            raise ValueError(f"cap mode must be off, fixed or adaptive, not {self.mode!r}")
        if self.mode == "fixed" and (self.k is None or self.k < 1):
            raise ValueError("a fixed cap needs k >= 1")
        if self.k_min < 1 or (self.k_max is not None and self.k_max < self.k_min):
            raise ValueError("cap bounds need 1 <= k_min <= k_max")
