"""What every benchmark shares: result rows, interleaved repeats, epoch timing, process timing."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Row:
    """One line of the result table: candidate / baseline, measured side by side.

    Attributes:
        benchmark: The benchmark's name.
        case: What was measured (model, shape, command...).
        candidate: What the ratio's numerator measures.
        baseline: What the denominator measures.
        candidate_value: The candidate's median.
        baseline_value: The baseline's median.
        unit: Unit of the two values.
        goal: The ratio the issue asks for (`ratio <= goal`), or None.
        note: Anything the numbers need to be read right.
    """

    benchmark: str
    case: str
    candidate: str
    baseline: str
    candidate_value: float
    baseline_value: float
    unit: str
    goal: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        """candidate_value / baseline_value."""
        return self.candidate_value / self.baseline_value

    @property
    def met(self) -> bool | None:
        """Whether the goal is met (None without a goal)."""
        return None if self.goal is None else self.ratio <= self.goal

    def as_dict(self) -> dict[str, Any]:
        """The row with its ratio and verdict, for the JSON file."""
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def interleaved(measures: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Runs each measure `repeats` times, alternating their order, and returns the medians.

    Alternating (A B, B A, ...) spreads the load of a busy machine evenly over the candidates.
    """
    names = list(measures)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else reversed(names):
            samples[name].append(measures[name]())
    return {name: statistics.median(values) for name, values in samples.items()}


def epoch_timer() -> Any:
    """Returns a Keras callback that records when each epoch ends (after the other callbacks)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.ends.append(time.perf_counter())

        def steady_epoch(self) -> float:
            """Median epoch duration after the first (which traces and compiles)."""
            return statistics.median(b - a for a, b in zip(self.ends, self.ends[1:], strict=False))

    return EpochTimer()


def regfw_step_time(overrides: Sequence[str], run_dir: Path) -> float:
    """Seconds per training step of regfw's own fit (pipeline and callbacks), after the first epoch.

    Args:
        overrides: Config overrides; `trainer.epochs` should be at least 2.
        run_dir: Where the run's TensorBoard files go.
    """
    import regfw
    from regfw.config import backend

    cfg = regfw.compose(overrides)
    name = backend.use(cfg.trainer)  # before Keras is imported: one process has one backend

    import keras

    from regfw.build import data
    from regfw.training import trainer
    from regfw.training.callbacks import make_callbacks
    from regfw.training.divergence import DivergenceGuard

    if keras.config.backend() != name:
        raise RuntimeError(f"the run asks for {name}, but Keras runs {keras.config.backend()}")
    keras.backend.clear_session(free_memory=True)
    keras.utils.set_random_seed(cfg.trainer.seed)
    split = data.load(cfg.data, seed=cfg.trainer.seed)
    model, terms = trainer.build(cfg)
    timer = epoch_timer()
    callbacks = make_callbacks(cfg, run_dir, terms, DivergenceGuard(terms))
    trainer.fit(cfg, model, split, [*callbacks, timer])
    steps = -(-len(split.x_train) // cfg.trainer.batch_size)
    return timer.steady_epoch() / steps


@dataclass(frozen=True)
class ProcessRun:
    """A finished process: wall time in seconds, peak resident memory in MiB, its output."""

    seconds: float
    peak_rss_mib: float
    stdout: str = ""


def run_process(
    args: Sequence[str], cwd: Path, *, peak: bool = True, timeout: float = 600
) -> ProcessRun:
    """Runs `python <args>` and measures its wall time and its own peak RSS (see `peak.py`).

    Args:
        args: Arguments of `python`.
        cwd: Working directory.
        peak: Measure the peak RSS, through a small process in between (about 0.05 s more);
            False: run the command directly, and report a peak of 0.
        timeout: Seconds before the process is killed.

    Raises:
        RuntimeError: If the process fails.
        subprocess.TimeoutExpired: If it runs past `timeout` seconds.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak_kib"
        wrapper = ["-m", "benchmarks.peak", str(peak_file)] if peak else []
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, *wrapper, *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"python {' '.join(args)} failed:\n{done.stderr[-2000:]}")
        peak_mib = int(peak_file.read_text()) / 1024 if peak else 0.0
        return ProcessRun(seconds, peak_mib, done.stdout)
