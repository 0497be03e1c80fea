"""The sweep report: `summary.csv`, `report.html`, a markdown table, seed aggregates and plots.

Written in the sweep folder after every multirun by `regfw.sweeps.callback.SweepCallback`, and on
demand:

    python -m regfw.report outputs/multirun/<date>/<time>

One row per job folder (one with `.hydra/overrides.yaml`): its overrides and the command that
reruns it, its hyperparameter values (the keys given on the command line plus `penalty.name` and
`penalty.scale`; a `penalty=...` override is `penalty.name`), status (`ok`, `failed` or
`diverged`, with the error), epochs, wall time, the monitor and its value (`trainer.monitor`, the
objective), and the final metrics as `train/<name>`, `validation/<name>`, `penalty/<term>` and
`diagnostics/<name>` (model-wide).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from regfw.config import yaml_text
from regfw.config.compose import train_command
from regfw.runs import atomic
from regfw.training import hparams

STATUS = {"completed": "ok", "failed": "failed", "diverged": "diverged"}
SEED = "trainer.seed"
# The columns of the terminal table and of the seed aggregates, after the hyperparameters (the
# metric a run has of accuracy and mae).
SHOWN = ("validation/data_loss", "validation/accuracy", "validation/mae", "penalty/total")
AGGREGATED = (*SHOWN, "validation/loss", "diagnostics/near_zero", "diagnostics/orthogonality")
# After the sweep's TensorBoard command (a shell comment, so the line still pastes as a command):
# HParams reads one experiment per logdir, so a logdir above several sweeps mislabels columns.
ONE_SWEEP = "# one sweep per TensorBoard: HParams reads a single sweep's columns"
_FIXED = ("job", "overrides", "command", "status", "error", "epochs_run", "wall_time_s", "rss_mb",
          "monitor", "objective")  # fmt: skip


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Returns the job folders of a sweep in job order (`0, 1, 2, ..., 10`)."""
    found = [p.parent.parent for p in sweep_dir.glob("**/.hydra/overrides.yaml")]

    def order(path: Path) -> list[Any]:
        parts = re.split(r"(\d+)", str(path.relative_to(sweep_dir)))
        return [int(p) if p.isdigit() else p for p in parts]

    return sorted(found, key=order)


def job_row(sweep_dir: Path, job_dir: Path) -> dict[str, Any]:
    """Returns the summary row of one job folder.

    A job that left no `metrics.json`, or whose record or metrics cannot be read, is a `failed`
    row with the reason: one bad job folder never stops the report.
    """
    row: dict[str, Any] = {"job": str(job_dir.relative_to(sweep_dir)), "overrides": ""}
    try:
        overrides, values = _job_record(job_dir / ".hydra")
    except Exception as error:
        return {**row, "status": "failed", "error": f"unreadable .hydra record: {_reason(error)}"}
    task = [o for o in overrides if not o.startswith("hydra.")]
    row["overrides"] = " ".join(task)
    row["command"] = train_command(task)
    row.update(values)
    metrics_file = job_dir / "metrics.json"
    if not metrics_file.is_file():
        return {**row, "status": "failed", "error": "no metrics.json: the job did not finish"}
    try:
        metrics = json.loads(metrics_file.read_text())
        if not isinstance(metrics, dict):
            raise ValueError(f"expected a JSON object, got {type(metrics).__name__}")
    except (OSError, ValueError) as error:
        return {**row, "status": "failed", "error": f"unreadable metrics.json: {_reason(error)}"}
    row["status"] = STATUS.get(metrics.get("status"), str(metrics.get("status")))
    row["error"] = metrics.get("error", "")
    row["epochs_run"] = metrics.get("epochs_run")
    row["wall_time_s"] = metrics.get("wall_time_s")
    row["rss_mb"] = metrics.get("rss_mb")
    objective = metrics.get("objective") or {}
    row["monitor"], row["objective"] = objective.get("name"), objective.get("value")
    for section in ("train", "validation", "penalty"):
        row.update({f"{section}/{k}": v for k, v in (metrics.get(section) or {}).items()})
    diagnostics = metrics.get("diagnostics") or {}
    row.update({f"diagnostics/{k}": v for k, v in diagnostics.items() if "/" not in k})
    return row


def _job_record(hydra_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """A job's overrides and hyperparameter values, from its `.hydra` record."""
    overrides = yaml_text.read(hydra_dir / "overrides.yaml")
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise ValueError("overrides.yaml is not a list of overrides")
    # Plain data: `run_values` selects from it as OmegaConf would (a config takes ~10 ms a job).
    cfg = yaml_text.read(hydra_dir / "config.yaml")
    if not isinstance(cfg, dict):
        raise ValueError(f"config.yaml is not a mapping (a {type(cfg).__name__})")
    hydra_yaml = hydra_dir / "hydra.yaml"
    choices = _choices(hydra_yaml) if hydra_yaml.is_file() else None
    return overrides, hparams.run_values(cfg, overrides, choices)


def _choices(hydra_yaml: Path) -> dict[str, Any]:
    """The config-group choices in a job's `hydra.yaml` (`hydra.runtime.choices`).

    Read as plain data (`yaml_text.read`, libyaml): the file is Hydra's whole config, and
    making a config of it takes OmegaConf about 30 ms a job (4 ms for the data alone).
    """
    choices = yaml_text.read(hydra_yaml)["hydra"]["runtime"]["choices"]
    if not isinstance(choices, dict):
        raise ValueError("hydra.yaml: hydra.runtime.choices is not a mapping")
    return choices


def _reason(error: BaseException) -> str:
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


def searched_keys(sweep_dir: Path) -> list[str]:
    """Keys a sweeper searched (`hydra.sweeper.params`, e.g. Optuna's), from the first job."""
    for job in job_dirs(sweep_dir):
        hydra_yaml = job / ".hydra" / "hydra.yaml"
        if hydra_yaml.is_file():
            params = OmegaConf.select(OmegaConf.load(hydra_yaml), "hydra.sweeper.params")
            return list(params or [])
    return []


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """Returns one summary row per job folder of `sweep_dir`."""
    sweep_dir = Path(sweep_dir)
    return [job_row(sweep_dir, job) for job in job_dirs(sweep_dir)]


def hparam_keys(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The hyperparameter columns of the rows (dotted config keys and group names)."""
    keys = [k for row in rows for k in row if "/" not in k and k not in _FIXED]
    return list(dict.fromkeys(keys))


def aggregate_over_seeds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups the completed rows by every hyperparameter but `trainer.seed`: n, mean and std.

    Returns:
        One row per group: its hyperparameters, `n`, and `<metric>/mean`, `<metric>/std` (sample
        std, 0 for a single seed) for the metrics in `AGGREGATED` the rows have.
    """
    keys = [k for k in hparam_keys(rows) if k != SEED]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        if row["status"] == "ok":
            groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    result = []
    for values, members in groups.items():
        out: dict[str, Any] = {**dict(zip(keys, values, strict=True)), "n": len(members)}
        for metric in AGGREGATED:
            numbers = [m[metric] for m in members if _is_finite(m.get(metric))]
            if numbers:
                out[f"{metric}/mean"] = statistics.fmean(numbers)
                out[f"{metric}/std"] = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
        result.append(out)
    return result


def _is_finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Returns the rows as CSV text, with the union of their columns (first seen, first)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def markdown(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Returns a markdown table of the given columns (numbers with 4 significant digits)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value: Any, width: int = 80) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 3] + "..."


def write_report(sweep_dir: str | Path, out: Any = sys.stdout) -> list[dict[str, Any]]:
    """Writes `summary.csv`, `summary_by_seed.csv` (if seeds vary), the plots and `report.html`.

    Prints the tables, where the report is and the TensorBoard command for the sweep.

    Args:
        sweep_dir: The sweep folder (`hydra.sweep.dir`).
        out: Where the markdown tables and the paths go.

    Returns:
        The summary rows.
    """
    from regfw.sweeps import html, plots
    from regfw.training.console import shown_path, tensorboard_command

    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    atomic.write_text(sweep_dir / "summary.csv", to_csv(rows))
    keys = hparam_keys(rows)
    varying = [k for k in keys if k in hparams.ALWAYS or len({str(r.get(k)) for r in rows}) > 1]
    shown = [m for m in SHOWN if any(m in r for r in rows)]
    status = [{**r, "status": f"{r['status']}: {r['error']}" if r["error"] else r["status"]}
              for r in rows]  # fmt: skip
    columns = ["job", *varying, "status", *shown, "wall_time_s", "rss_mb"]
    print(markdown(status, columns), file=out)
    groups = aggregate_over_seeds(rows)
    seeds = len({r.get(SEED) for r in rows}) > 1
    if seeds:
        atomic.write_text(sweep_dir / "summary_by_seed.csv", to_csv(groups))
        spread = [c for m in shown for c in (f"{m}/mean", f"{m}/std")]
        print(markdown(groups, [k for k in varying if k != SEED] + ["n", *spread]), file=out)
    written = plots.write_plots(sweep_dir, groups, keys, searched_keys(sweep_dir))
    page = html.write_html(sweep_dir, rows, groups if seeds else [], varying, shown, written)
    print(f"Wrote summary.csv, {', '.join(p.name for p in [*written, page])}", file=out)
    print(f"Report: {shown_path(page)}", file=out)
    print(f"TensorBoard: {tensorboard_command(sweep_dir)}  {ONE_SWEEP}", file=out)
    return rows
