"""What a run says while it trains: one short line per epoch, and where its results went.

Every line goes through Python logging (logger `regfw.training.console`), so a run started by
`train.py` shows it on the console and keeps it in its folder's `train.log` (Hydra's job logging);
where nothing configured logging (a notebook), the lines are printed. Keras's own progress output
is off: `trainer.verbose` 0 leaves out the epoch lines, 1 or 2 print them (`EpochLine` in
`regfw.training.callbacks`). Importing this module does not import TensorFlow (the sweep report
uses it).

    epoch 3/10 0.1s | loss 0.2506 data_loss 0.2444 penalty/total 0.006293 accuracy 0.9231 |
    val data_loss 0.2909 accuracy 0.9123                                      (on one line)

The validation loss is left out: it is the validation data loss plus `penalty/total` (the same
weights). So are the per-layer diagnostics and the penalty scales (TensorBoard and `metrics.json`
have them all). Numbers have 4 significant digits and at most 8 characters, and the epoch's time
at most 6 (`duration`), so the line stays within 160 characters with the console's time and level
in front, for any model and data set and up to 9,999 epochs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The quality metric a run reports besides the loss: accuracy (classification) or mae (regression).
METRICS = ("accuracy", "mae")


def say(line: str) -> None:
    """Logs `line` at INFO, or prints it when no logging handler is configured at all."""
    if log.hasHandlers():
        log.info(line)
    else:
        print(line, flush=True)


def number(value: Any) -> str:
    """A metric value in at most 8 characters: `0.2506`, `6.300e-5`, `-1.23e-5`, `1.00e-12`.

    4 significant digits, fewer only where a sign or a two-digit exponent needs the room. None (a
    value that was not finite in `metrics.json`) is `nan`.
    """
    if value is None:
        return "nan"
    value = float(value)
    if value == 0 or not math.isfinite(value) or 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    for digits in (3, 2, 1, 0):
        mantissa, exponent = f"{value:.{digits}e}".split("e")
        text = f"{mantissa}e{int(exponent)}"
        if len(text) <= 8:
            break
    return text


def duration(seconds: float) -> str:
    """An epoch's time: `0.1s`, `12.3s`, `1234s`, `190m`.

    Tenths of a second below 100 s, whole seconds below 10,000 s, whole minutes from there on:
    at most 6 characters for an epoch under 69 days, so a slow epoch does not lengthen the line.
    """
    if round(seconds, 1) < 100:
        return f"{seconds:.1f}s"
    if round(seconds) < 10_000:
        return f"{seconds:.0f}s"
    return f"{seconds / 60:.0f}m"


def _metric(names: Any) -> str | None:
    return next((m for m in METRICS if m in names), None)


def epoch_line(epoch: int, epochs: int, logs: Mapping[str, Any], seconds: float) -> str:
    """The line for one epoch: training loss, data loss, penalty and metric, then validation's.

    Args:
        epoch: The epoch, from 0.
        epochs: The number of epochs of the run.
        logs: Keras's epoch logs, with regfw's `data_loss` and `penalty/total`.
        seconds: How long the epoch took, validation included.
    """
    metric = _metric(logs)
    train = [k for k in ("loss", "data_loss", "penalty/total", metric) if k and k in logs]
    val = [k for k in ("data_loss", metric) if k and f"val_{k}" in logs]
    parts = [f"epoch {epoch + 1}/{epochs} {duration(seconds)}"]
    parts.append(" ".join(f"{k} {number(logs[k])}" for k in train))
    if val:
        parts.append("val " + " ".join(f"{k} {number(logs[f'val_{k}'])}" for k in val))
    return " | ".join(parts)


def shown_path(path: str | Path) -> str:
    """`path` relative to the working directory when it lies below it, else absolute; quoted."""
    absolute = Path(os.path.abspath(path))
    try:
        path = absolute.relative_to(Path.cwd())
    except ValueError:
        path = absolute
    return shlex.quote(str(path))


def tensorboard_command(logdir: str | Path) -> str:
    """The command that opens `logdir` in TensorBoard."""
    return f"tensorboard --logdir {shown_path(logdir)}"


def summary_lines(metrics: Mapping[str, Any]) -> list[str]:
    """The end of a run: status, run folder, final validation metrics and penalty, TensorBoard.

    Args:
        metrics: The run's `metrics.json` contents (`regfw.training.trainer.train`).
    """
    folder = shown_path(metrics["output_dir"])
    status = metrics["status"]
    if status == "completed":
        head = f"completed {metrics['epochs_run']} epochs in {metrics['wall_time_s']:.1f}s"
    else:
        head = f"{status}: {metrics.get('error', '')}"
    lines = [f"run {head}; run folder {folder}"]
    validation = metrics.get("validation") or {}
    if validation:
        keys = [k for k in ("data_loss", "loss", _metric(validation)) if k and k in validation]
        lines.append("validation " + " ".join(f"{k} {number(validation[k])}" for k in keys))
    penalty = dict(metrics.get("penalty") or {})
    total = penalty.pop("total", None)
    if total is not None:
        terms = " + ".join(f"{name} {number(value)}" for name, value in penalty.items())
        lines.append(f"penalty/total {number(total)}" + (f" = {terms}" if terms else ""))
    lines.append(tensorboard_command(metrics["output_dir"]))
    return lines


@contextlib.contextmanager
def warnings_logged() -> Iterator[None]:
    """Routes Python warnings to logging while it lasts, so that `train.log` keeps them too."""
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)


def spans(names: list[str]) -> str:
    """Job names as short ranges: `0-3, 7, 9-12` (numbers in a row become one range)."""
    parts: list[list[str]] = []
    for name in names:
        last = parts[-1][-1] if parts else None
        if last is not None and name.isdigit() and last.isdigit() and int(name) == int(last) + 1:
            parts[-1].append(name)
        else:
            parts.append([name])
    return ", ".join(p[0] if len(p) == 1 else f"{p[0]}-{p[-1]}" for p in parts)
