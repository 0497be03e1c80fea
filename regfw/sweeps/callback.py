"""Multirun plumbing: a failing job is recorded instead of stopping the sweep; the Hydra callback.

`SweepCallback` (configured under `hydra.callbacks` in `conf/config.yaml`) writes the sweep report
and the TensorBoard HParams experiment after the last job; it ends the multirun with exit code 1
when a job did not complete, after every job ran.
With `hydra/launcher=submitit_slurm` it puts regfw's Slurm launcher in place of the plugin's
(`regfw.sweeps.slurm`).
Importing this module does not import TensorFlow (Hydra instantiates the callback for every run).
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, read_write

from regfw.errors import JobStopped, OutputError, RegfwError, RunFolderError, full_error
from regfw.runs import atomic, folder

log = logging.getLogger(__name__)
EXIT_JOB_FAILED = 1
# `hydra/launcher=submitit_slurm` runs regfw's subclass of hydra-submitit-launcher's Slurm launcher,
# which records the jobs Slurm cancels or stops at their time limit instead of ending the sweep
# at the first one (`regfw.sweeps.slurm`). Hydra instantiates launchers from `hydra_plugins` only.
SUBMITIT_SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
REGFW_SLURM = "hydra_plugins.regfw_slurm_launcher.slurm_launcher.SlurmLauncher"


def in_multirun() -> bool:
    """Whether the current process is running a job of a Hydra multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


_stops: list[JobStopped] = []  # the stops a signal handler raised in the current job


def stopped_by(stop: JobStopped) -> JobStopped:
    """Records a stop that a signal handler raises in the current job; returns it, to raise.

    A signal lands wherever the job is. Inside a TensorFlow op (a `tf.py_function`), TensorFlow
    wraps what the handler raises in its own error (`UnknownError: ... JobStopped: ...`);
    `run_recorded` still records the job as stopped, with the stop's own reason.
    """
    _stops.append(stop)
    return stop


def run_recorded(cfg: DictConfig, train: Callable[[], float]) -> float:
    """Runs one job of a sweep; a failure is logged and recorded in the job's folder.

    Hydra stops a sweep at the first job that raises; a job that catches its error lets the others
    run, and the callback reports it at the end. A failed job's folder gets its config, a
    `metrics.json` with `status: failed` (or the status of a `JobStopped`, e.g. `timeout`) and the
    reason, and its HParams session, except when the folder itself was the problem
    (`RunFolderError`: it is left as it was).

    Args:
        cfg: The job's config.
        train: Trains and returns the objective.

    Returns:
        The objective, or NaN when the job failed (Optuna records the trial as failed).
    """
    from hydra.core.hydra_config import HydraConfig

    _stops.clear()
    try:
        return train()
    except RunFolderError as error:
        log.error("job not run; the sweep goes on: %s", error)
        return math.nan
    except Exception as raised:
        # A stop that surfaced wrapped in another error (see `stopped_by`) is still the stop.
        error = raised if isinstance(raised, JobStopped) or not _stops else _stops[-1]
        status = error.status if isinstance(error, JobStopped) else "failed"
        if full_error():
            log.exception("job %s; the sweep goes on", status)
        elif isinstance(error, RegfwError):
            log.error("job %s; the sweep goes on: %s", status, error)
        else:
            log.error("job failed; the sweep goes on: internal error: %s: %s (HYDRA_FULL_ERROR=1 "
                      "shows the traceback)", type(error).__name__, error)  # fmt: skip
        run_dir = Path(HydraConfig.get().runtime.output_dir)
        record_failure(run_dir, cfg, status, f"{type(error).__name__}: {error}")
        return math.nan


def record_failure(run_dir: Path, cfg: DictConfig, status: str, error: str) -> None:
    """Records a job that did not complete: config, `metrics.json` with status and reason, session.

    Used for a job that raised (`run_recorded`) and for a Slurm job that ended without a result
    (`regfw.sweeps.slurm`). The record is written from the current `HydraConfig`, as the job
    writes it; a record that cannot be written is logged.

    Args:
        run_dir: The job's folder.
        cfg: The job's config.
        status: `failed`, `timeout` or `cancelled`.
        error: The reason, one line.
    """
    from regfw.training import hparams

    metrics = {
        "status": status,
        "error": error,
        "output_dir": str(run_dir),
        "objective": {"name": OmegaConf.select(cfg, "trainer.monitor"), "value": None},
    }
    try:
        folder.record(run_dir, cfg)
        atomic.write_json(run_dir / folder.METRICS, metrics)
        hparams.write_run(run_dir, cfg, status)
    except OutputError as write_error:
        log.error("could not record the failure: %s", write_error)


class SweepCallback(Callback):
    """Writes the report and the HParams experiment at sweep end.

    Args:
        report: Whether to write `summary.csv`, `report.html`, the plots and print the table.
        fail_on_bad_jobs: Whether a failed or diverged job makes the multirun exit with code 1.
    """

    def __init__(self, report: bool = True, fail_on_bad_jobs: bool = True) -> None:
        self.report = report
        self.fail_on_bad_jobs = fail_on_bad_jobs

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from regfw.config import backend

        backend.use(config.trainer)  # before TensorFlow (hparams) imports Keras
        launcher = config.hydra.launcher
        if launcher.get("_target_") == SUBMITIT_SLURM:  # runs before Hydra creates the launcher
            with read_write(launcher):
                launcher._target_ = REGFW_SLURM

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from regfw.sweeps import report
        from regfw.training import hparams

        sweep_dir = Path(config.hydra.sweep.dir)
        search_space = OmegaConf.select(config, "hydra.sweeper.params", default=None)
        try:
            rows = report.write_report(sweep_dir) if self.report else report.collect(sweep_dir)
            columns = hparams.domains(
                config.hydra.overrides.task,
                OmegaConf.to_container(search_space, resolve=True) if search_space else None,
            )
            metrics = hparams.metrics(key for row in rows for key in row)
            hparams.write_experiment(sweep_dir, columns, metrics)
        except Exception:  # Hydra would turn it into a warning and exit 0
            log.exception("the sweep report failed")
            sys.exit(EXIT_JOB_FAILED)
        bad = [row for row in rows if row["status"] != "ok"]
        for row in bad:
            log.error("job %s %s: %s", row["job"], row["status"], row["error"])
        if bad and self.fail_on_bad_jobs:
            log.error("%d of %d jobs did not complete; see %s", len(bad), len(rows), sweep_dir)
            sys.exit(EXIT_JOB_FAILED)
