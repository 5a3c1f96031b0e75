"""Reading a few gauges out of a Prometheus text exposition (engines' /metrics)."""

from __future__ import annotations

import math
from collections.abc import Iterable


def sum_samples(text: str, names: Iterable[str]) -> dict[str, float]:
    """Sum the samples of each named metric over all label sets (e.g. several models)."""
    wanted = set(names)
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        brace = line.find("{")
        space = line.find(" ")
        end = brace if 0 <= brace < space or (brace >= 0 and space < 0) else space
        name = line[:end] if end >= 0 else line
        if name not in wanted:
            continue
        value_part = line[line.rfind("}") + 1 :] if brace >= 0 else line[len(name) :]
        fields = value_part.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if math.isfinite(value):
            totals[name] = totals.get(name, 0.0) + value
    return totals
