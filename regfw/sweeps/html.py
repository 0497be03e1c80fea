"""`report.html`: the sweep report as one page that opens offline, beside `summary.csv`.

- The jobs, best first by the sweep's monitor (`trainer.monitor`; lower is better unless it names
  an accuracy), jobs without a value (failed, diverged) last, marked with their status and error;
  each with the command that reruns it. Clicking a column header sorts by that column.
- Seed replicates (when `trainer.seed` varies) as mean ± std (n) per setting.
- The plots (`regfw.sweeps.plots`), embedded as `data:` URIs.
- Where the files are, and the TensorBoard command for the sweep.

No script, style sheet or font comes from the network.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from regfw.runs import atomic
from regfw.training.console import tensorboard_command

NAME = "report.html"
STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; cursor: pointer; white-space: nowrap; }
th.sorted { background: #dde8f6; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed td { background: #fde2e2; }
tr.diverged td { background: #fff0d6; }
code { font-size: 0.85em; }
td.command { white-space: nowrap; }
img { max-width: 100%; border: 1px solid #ddd; margin: 0.5em 0; }
"""
SORT_SCRIPT = """
for (const table of document.querySelectorAll("table.sortable")) {
  table.querySelectorAll("th").forEach((th, column) => th.addEventListener("click", () => {
    const body = table.tBodies[0], up = th.dataset.order !== "ascending";
    const key = (row) => {
      const cell = row.cells[column], value = cell.dataset.value ?? cell.textContent;
      const n = parseFloat(value);
      return isNaN(n) ? value : n;
    };
    const rows = [...body.rows].sort((a, b) => {
      const x = key(a), y = key(b);
      if (typeof x !== typeof y) return typeof x === "number" ? -1 : 1;
      return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
    });
    for (const other of table.querySelectorAll("th")) {
      other.classList.remove("sorted");
      delete other.dataset.order;
    }
    th.classList.add("sorted");
    th.dataset.order = up ? "ascending" : "descending";
    rows.forEach((row) => body.appendChild(row));
  }));
}
"""


def monitor_key(monitor: str) -> str:
    """The summary column of a monitor: `val_data_loss` -> `validation/data_loss`."""
    if monitor.startswith("val_"):
        return f"validation/{monitor.removeprefix('val_')}"
    return f"train/{monitor}"


def higher_is_better(monitor: str) -> bool:
    """Whether a larger monitor value is better (an accuracy, as Keras's `mode="auto"` says)."""
    return "acc" in monitor


def ranked(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows best first by their objective; rows without a finite objective last, in order."""
    scored = [r for r in rows if _finite(r.get("objective"))]
    unscored = [r for r in rows if not _finite(r.get("objective"))]
    monitor = next((r["monitor"] for r in scored if r.get("monitor")), "")
    scored.sort(key=lambda r: r["objective"], reverse=higher_is_better(monitor))
    return scored + unscored


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _cell(value: Any) -> str:
    if _finite(value) and isinstance(value, float):
        return f'<td class="number" data-value="{value!r}">{value:.4g}</td>'
    if _finite(value):
        return f'<td class="number" data-value="{value}">{value}</td>'
    return f"<td>{html.escape('' if value is None else str(value))}</td>"


def jobs_table(rows: Sequence[dict[str, Any]], keys: Sequence[str], metrics: Sequence[str]) -> str:
    """The jobs table, ranked; the monitor's column is marked as the one sorted by."""
    rows = ranked(rows)
    monitor = next((r["monitor"] for r in rows if r.get("monitor")), None)
    sort_column = monitor_key(monitor) if monitor else None
    if sort_column and sort_column not in metrics:
        metrics = [sort_column, *metrics]
    columns = ["rank", "job", *keys, "status", *metrics, "epochs_run", "wall_time_s", "command"]
    order = "descending" if monitor and higher_is_better(monitor) else "ascending"
    head = "".join(
        f'<th class="sorted" data-order="{order}" title="trainer.monitor={html.escape(monitor)}">'
        f"{html.escape(c)} ({'max' if order == 'descending' else 'min'} first)</th>"
        if c == sort_column
        else f"<th>{html.escape(c)}</th>"
        for c in columns
    )
    body = []
    for rank, row in enumerate(rows, start=1):
        status = row.get("status", "")
        cells = []
        for column in columns:
            if column == "rank":
                cells.append(_cell(rank))
            elif column == "status":
                text = f"{status}: {row['error']}" if row.get("error") else status
                cells.append(f'<td class="status">{html.escape(str(text))}</td>')
            elif column == "command":
                command = html.escape(str(row.get("command", "")))
                cells.append(f'<td class="command"><code>{command}</code></td>')
            else:
                cells.append(_cell(row.get(column)))
        body.append(f'<tr class="{html.escape(status)}">{"".join(cells)}</tr>')
    return (
        f'<table class="sortable" id="jobs"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def seeds_table(
    groups: Sequence[dict[str, Any]], keys: Sequence[str], metrics: Sequence[str]
) -> str:
    """Seed replicates: per setting, `n` and mean ± std of each metric."""
    metrics = [m for m in metrics if any(f"{m}/mean" in g for g in groups)]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [*keys, "n", *metrics])
    body = []
    for group in groups:
        cells = [_cell(group.get(k)) for k in keys] + [_cell(group["n"])]
        for metric in metrics:
            mean, std = group.get(f"{metric}/mean"), group.get(f"{metric}/std")
            if mean is None:
                cells.append("<td></td>")
            else:
                text = f"{mean:.4g} ± {std:.2g}"
                cells.append(f'<td class="number" data-value="{mean!r}">{text}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<table class="sortable" id="seeds"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def page(
    sweep_dir: Path,
    rows: Sequence[dict[str, Any]],
    groups: Sequence[dict[str, Any]],
    keys: Sequence[str],
    metrics: Sequence[str],
    images: Sequence[Path],
) -> str:
    """The whole report page (see the module docstring).

    Args:
        sweep_dir: The sweep folder.
        rows: The summary rows (`regfw.sweeps.report.collect`).
        groups: The seed aggregates, or none when seeds do not vary.
        keys: The hyperparameter columns to show (those that vary).
        metrics: The metric columns to show.
        images: The plot files to embed.
    """
    counts = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    summary = ", ".join(f"{n} {status}" for status, n in counts.items())
    parts = [
        f"<h1>Sweep {html.escape(str(sweep_dir))}</h1>",
        f"<p>{len(rows)} jobs: {html.escape(summary)}. Files: <code>summary.csv</code>"
        + (", <code>summary_by_seed.csv</code>" if groups else "")
        + f". TensorBoard: <code>{html.escape(tensorboard_command(sweep_dir))}</code></p>",
        "<h2>Jobs</h2>",
        jobs_table(rows, keys, metrics),
    ]
    if groups:
        group_keys = [k for k in keys if all(k in g for g in groups)]  # all but the seed
        parts += ["<h2>Seed replicates: mean ± std</h2>", seeds_table(groups, group_keys, metrics)]
    if images:
        parts.append("<h2>Plots</h2>")
    for image in images:
        data = base64.b64encode(image.read_bytes()).decode("ascii")
        parts.append(f'<img alt="{html.escape(image.name)}" src="data:image/png;base64,{data}">')
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Sweep report: {html.escape(sweep_dir.name)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(parts)}<script>{SORT_SCRIPT}</script></body></html>\n"
    )


def write_html(
    sweep_dir: Path,
    rows: Sequence[dict[str, Any]],
    groups: Sequence[dict[str, Any]],
    keys: Sequence[str],
    metrics: Sequence[str],
    images: Sequence[Path],
) -> Path:
    """Writes `report.html` in `sweep_dir` (see `page` for the arguments); returns its path."""
    path = sweep_dir / NAME
    atomic.write_text(path, page(sweep_dir, rows, groups, keys, metrics, images))
    return path
