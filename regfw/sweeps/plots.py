"""PNG plots of a sweep against the penalty scale (log x), one line per penalty.

- `validation_vs_scale.png`: validation data loss and validation accuracy;
- `diagnostics_vs_scale.png`: the fraction of near-zero weights and the orthogonality deviation.

Points are means over the rows that differ only in `trainer.seed`, with the sample standard
deviation as error bars when seeds are replicated. A run with scale 0 (`penalty=none`) is a dashed
horizontal line. Keys a sweeper searches over an interval do not split lines (every trial differs).

Tiny differences are not magnified: the y axis spans at least `MIN_SPAN` of the largest |value|
shown, and each panel states the spread of its points (max - min, and relative to the mean), so a
1e-4 difference on a loss of 0.7 is a flat line labelled "spread 1e-04 (0.014%)".
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from regfw.runs import atomic

SCALE = "penalty.scale"
NOT_A_LINE = (SCALE, "trainer.seed", "penalty", "penalty.name")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
MIN_SPAN = 0.05  # the y axis covers at least this fraction of the largest |value| shown
FIGURES = {
    "validation_vs_scale.png": (
        ("validation/data_loss", "validation data loss (no penalty)"),
        ("validation/accuracy", "validation accuracy"),
    ),
    "diagnostics_vs_scale.png": (
        ("diagnostics/near_zero", "fraction of weights with |w| < 1e-3"),
        ("diagnostics/orthogonality", "orthogonality deviation ||G - I||_F / sqrt(p)"),
    ),
}


def lines(
    groups: Sequence[dict[str, Any]], metric: str, split_by: Sequence[str]
) -> dict[str, list[tuple[float, float, float]]]:
    """Returns label -> `(scale, mean, std)` points of `metric`, sorted by scale.

    Args:
        groups: Seed aggregates (`regfw.sweeps.report.aggregate_over_seeds`).
        metric: A metric name such as `validation/data_loss`.
        split_by: Keys whose values, with the penalty's name, label the lines.
    """
    points: dict[str, list[tuple[float, float, float]]] = {}
    for group in groups:
        if f"{metric}/mean" in group:
            label = ", ".join([str(group["penalty.name"])] + [f"{k}={group[k]}" for k in split_by])
            point = (float(group[SCALE]), group[f"{metric}/mean"], group[f"{metric}/std"])
            points.setdefault(label, []).append(point)
    return {label: sorted(p) for label, p in points.items()}


def write_plots(
    sweep_dir: Path, groups: Sequence[dict[str, Any]], keys: Sequence[str], searched: Sequence[str]
) -> list[Path]:
    """Writes the figures that have data to `sweep_dir`; returns their paths.

    Args:
        sweep_dir: The sweep folder.
        groups: Seed aggregates of the completed jobs (`regfw.sweeps.report.aggregate_over_seeds`).
        keys: The hyperparameter columns; those that vary (but the scale, the seed, the penalty
            and `searched`) split the lines.
        searched: Keys a sweeper searched over an interval.
    """
    from matplotlib.figure import Figure

    split_by = [
        k
        for k in keys
        if k not in NOT_A_LINE and k not in searched and len({str(g.get(k)) for g in groups}) > 1
    ]
    written = []
    for name, panels in FIGURES.items():
        data = [(lines(groups, metric, split_by), title) for metric, title in panels]
        if not any(d for d, _ in data):
            continue
        figure = Figure(figsize=(6 * len(panels), 4.5), layout="constrained")
        for axes, (by_label, title) in zip(figure.subplots(1, len(panels)), data, strict=True):
            _draw(axes, by_label, title)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100)
        atomic.write_bytes(sweep_dir / name, buffer.getvalue())
        written.append(sweep_dir / name)
    return written


def _draw(axes: Any, by_label: dict[str, list[tuple[float, float, float]]], title: str) -> None:
    for i, (label, points) in enumerate(sorted(by_label.items())):
        positive = [p for p in points if p[0] > 0]
        if positive:
            x, y, err = zip(*positive, strict=True)
            marker = MARKERS[i % len(MARKERS)]  # lines that coincide stay distinguishable
            axes.errorbar(x, y, yerr=err, marker=marker, capsize=3, alpha=0.8, label=label)
        for _, y, _ in (p for p in points if p[0] <= 0):
            axes.axhline(y, linestyle="--", color="gray", label=f"{label} (scale 0)")
    axes.set_xscale("log")
    axes.set_xlabel("penalty.scale")
    axes.set_title(title)
    axes.grid(True, which="both", alpha=0.3)
    values = [y for points in by_label.values() for _, y, _ in points]
    if values:
        low, high = y_limits(values, [e for points in by_label.values() for *_, e in points])
        axes.set_ylim(low, high)
        axes.text(0.01, 0.01, spread_label(values), transform=axes.transAxes, fontsize="small",
                  color="dimgray", va="bottom")  # fmt: skip
    if by_label:
        axes.legend(fontsize="small")


def y_limits(values: Sequence[float], errors: Sequence[float]) -> tuple[float, float]:
    """The y range: the points with their error bars, at least `MIN_SPAN` of the largest |value|."""
    low = min(v - e for v, e in zip(values, errors, strict=True))
    high = max(v + e for v, e in zip(values, errors, strict=True))
    span = max(high - low, MIN_SPAN * max(abs(v) for v in values))
    if span == 0:
        return low - 0.5, high + 0.5
    middle, margin = (low + high) / 2, 0.55 * span  # 10% headroom
    return middle - margin, middle + margin


def spread_label(values: Sequence[float]) -> str:
    """`spread <max - min> (<percent of |mean|>)` of the points of a panel."""
    spread = max(values) - min(values)
    mean = abs(sum(values) / len(values))
    relative = f" ({100 * spread / mean:.2g}% of the mean)" if mean else ""
    return f"spread {spread:.2g}{relative}"
