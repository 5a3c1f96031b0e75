"""PNG plots of a sweep: program-level token latency against arrival rate, one line per policy.

matplotlib is imported here only, with the Agg backend (no display, no GUI toolkit), so the rest
of the simulator runs without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Row = Mapping[str, Any]

INSTALL_HINT = "pip install 'autellix-proxy[bench]'"


def plotting_unavailable() -> str | None:
    """Why plots cannot be drawn here, or None. Plotting is an extra (the image and the proxy
    do not carry matplotlib), so the benchmark asks before a sweep that may take minutes."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return (
            f"plots need matplotlib, which is not installed: {INSTALL_HINT} "
            "(or pass --no-plots to write the CSV and JSON only)"
        )
    return None


_PANELS = (
    ("latency_mean", "mean"),
    ("latency_p99", "P99"),
)


def _series(
    rows: Sequence[Row], workload: str, column: str
) -> dict[str, tuple[list[float], list[float]]]:
    out: dict[str, tuple[list[float], list[float]]] = {}
    for row in sorted(rows, key=lambda r: (r["policy"], r["rate"])):
        if row["workload"] != workload:
            continue
        value = float(row[column])
        if not math.isfinite(value):
            continue
        xs, ys = out.setdefault(str(row["policy"]), ([], []))
        xs.append(float(row["rate"]))
        ys.append(value)
    return out


def plot_workload(
    rows: Sequence[Row],
    workload: str,
    path: Path,
    *,
    targets: Mapping[str, float] | None = None,
    title: str = "",
) -> Path:
    """One figure for ``workload``: a panel per statistic (mean, P99), log latency axis. A
    dashed line marks fcfs's latency target the throughput ratios were read at, a dotted one
    another baseline's (``column@curve`` in ``targets``), if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(_PANELS), figsize=(5.2 * len(_PANELS), 4.0), squeeze=False)
    for ax, (column, label) in zip(axes[0], _PANELS, strict=True):
        for policy, (xs, ys) in _series(rows, workload, column).items():
            ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.4, label=policy)
        for key, target in (targets or {}).items():
            name, _, against = key.partition("@")
            if name == column and math.isfinite(target):
                ax.axhline(
                    target,
                    color="grey",
                    linestyle=":" if against else "--",
                    linewidth=0.8,
                    label=f"target ({against or 'fcfs'})",
                )
        ax.set_yscale("log")
        ax.set_xlabel("arrival rate (programs/s)")
        ax.set_ylabel(f"{label} program token latency (s/token)")
        ax.grid(True, which="both", linewidth=0.3, alpha=0.6)
        ax.set_title(f"{workload}: {label}")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_sweep(
    rows: Sequence[Row],
    out: Path,
    *,
    targets: Mapping[str, Mapping[str, float]] | None = None,
    title: str = "",
) -> list[Path]:
    """A figure per workload in ``rows``, as ``latency_<workload>.png`` under ``out``."""
    workloads = sorted({str(r["workload"]) for r in rows})
    return [
        plot_workload(
            rows,
            w,
            out / f"latency_{w}.png",
            targets=(targets or {}).get(w),
            title=title,
        )
        for w in workloads
    ]
