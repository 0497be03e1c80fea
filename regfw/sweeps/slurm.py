"""Slurm sweeps: a job Slurm stops is recorded like a failed one and resumes from its checkpoint.

hydra-submitit-launcher (`hydra/launcher=submitit_slurm`) submits a multirun as a Slurm job array
and collects the results with submitit's `job.results()`, which raises for a job that left no
result: one cancelled with `scancel`, killed at its time limit, out of memory or on a failed node.
The multirun then ends at that job, without waiting for the others and without the sweep report.
regfw's launcher (`hydra_plugins.regfw_slurm_launcher`, which `SweepCallback` puts in place of the
plugin's) uses the steps here:

- In the job, `stop_at_time_limit`: submitit asks Slurm for a signal `signal_delay_s` before the
  time limit (`timeout_min`); on it submitit requeues the job if `max_num_timeout` allows, and
  otherwise raises into the running code. regfw turns that into `JobStopped("timeout")`, so the
  job records itself with status `timeout` and keeps its last checkpoint.
- `resumed`: a requeued job continues from its checkpoint (`trainer.resume=true`).
- In the submitting process, `record_unfinished`: a job that left no result gets its record and a
  `metrics.json` with status `cancelled`, `timeout` (Slurm's state, from `sacct`) or `failed` and
  the reason; the sweep goes on with NaN for it, as for any failed job.

Re-running the sweep with `trainer.resume=true` and the same `hydra.sweep.dir` finishes the
recorded jobs from their checkpoints and skips the completed ones.
"""

from __future__ import annotations

import logging
import math
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from omegaconf import DictConfig, open_dict, read_write

from regfw.errors import JobStopped
from regfw.runs import folder
from regfw.sweeps.callback import record_failure, stopped_by

log = logging.getLogger(__name__)

# Slurm's state of a job that left no result (`sacct`), and how the sweep records it; any other
# state (OUT_OF_MEMORY, NODE_FAIL, FAILED...) is `failed`.
STATUS = {"CANCELLED": "cancelled", "TIMEOUT": "timeout"}
RESUME = "trainer.resume"


def stop_at_time_limit(timeout_min: int, max_num_timeout: int) -> None:
    """Turns submitit's "timed out, not requeued" into `JobStopped("timeout")` in this job.

    Call it in the Slurm job, after submitit installed its signal handlers. submitit's handler
    still decides: it checkpoints the job and requeues it while `max_num_timeout` allows.

    Args:
        timeout_min: The launcher's `timeout_min`, for the message.
        max_num_timeout: The launcher's `max_num_timeout`, for the message.
    """
    import submitit
    from submitit.core.utils import UncompletedJobError

    number = getattr(signal, f"SIG{submitit.JobEnvironment.USR_SIG}")
    submitit_handler = signal.getsignal(number)
    if not callable(submitit_handler):
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        try:
            submitit_handler(signum, frame)  # requeues and exits, or raises
        except UncompletedJobError as error:
            reason = (
                f"Slurm's time limit (hydra.launcher.timeout_min={timeout_min}) was near and the "
                f"job was not requeued (hydra.launcher.max_num_timeout={max_num_timeout}; "
                f"submitit: {error}); continue it with trainer.resume=true and the same "
                "hydra.sweep.dir"
            )
            raise stopped_by(JobStopped("timeout", reason)) from None

    signal.signal(number, handler)


def resumed(overrides: Sequence[str]) -> list[str]:
    """Returns a job's overrides with `trainer.resume=true`, for the job submitit requeues."""
    kept = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != RESUME]
    return [*kept, f"{RESUME}=true"]


def job_config(
    hydra_context: Any, master: DictConfig, overrides: Sequence[str], num: int, job_id: str
) -> DictConfig:
    """Composes a job's config (with its `hydra` node) as the job does, its folder resolved.

    Args:
        hydra_context: The launcher's `HydraContext`.
        master: The multirun's config.
        overrides: The job's overrides.
        num: The job's number in the sweep (`hydra.job.num`).
        job_id: The Slurm job id (`hydra.job.id`).
    """
    config = hydra_context.config_loader.load_sweep_config(master, list(overrides))
    with open_dict(config.hydra.job):
        config.hydra.job.id = job_id
        config.hydra.job.num = num
    output_dir = Path(str(config.hydra.sweep.dir)) / str(config.hydra.sweep.subdir)
    with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
        config.hydra.runtime.output_dir = os.path.abspath(output_dir)
    return config


def record_unfinished(job: Any, config: DictConfig, error: Exception) -> Any:
    """Records a Slurm job that ended without a result; returns the `JobReturn` Hydra expects.

    The status comes from Slurm's state: `cancelled`, `timeout`, or `failed` for anything else
    (out of memory, a failed node, an error outside the task). The job's folder gets its record
    and a `metrics.json` with the status and the reason, as the job would have written them,
    unless the job's own `metrics.json` says it completed (it ended after writing it): that one
    is kept, and its objective returned. So is the job's own `timeout` or `cancelled` record when
    Slurm says `FAILED`: a job that stops itself at the time limit's signal can exit (with an
    error) before Slurm's limit is reached.

    Args:
        job: The submitit job.
        config: The job's config (`job_config`).
        error: What `job.results()` raised.

    Returns:
        A completed `hydra.core.utils.JobReturn` with the objective: NaN unless the run
        completed.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobReturn, JobStatus
    from submitit.core.utils import FailedJobError

    state = (job.state or "UNKNOWN").split()[0]  # sacct says e.g. "CANCELLED by 0"
    status = STATUS.get(state, "failed")
    if isinstance(error, FailedJobError):
        lines = [line for line in str(error).splitlines() if line.strip()]
        reason = f"Slurm job {job.job_id} failed outside the task: {lines[-1] if lines else state}"
    else:
        reason = f"Slurm job {job.job_id} ended {state} without a result"
    reason += f" (log: {job.paths.stdout})"
    if status != "failed":
        reason += "; continue it with trainer.resume=true and the same hydra.sweep.dir"
    run_dir = Path(config.hydra.runtime.output_dir)
    task_cfg = config.copy()
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    hydra_config = HydraConfig.instance()
    saved = hydra_config.cfg
    hydra_config.set_config(config)  # the record is written from it, as Hydra's run_job does
    try:
        previous = folder.inspect(run_dir).metrics or {}
        if previous.get("status") == "completed":
            value = (previous.get("objective") or {}).get("value")
        elif status == "failed" and previous.get("status") in STATUS.values():
            # The job stopped itself at Slurm's signal and recorded why (`stop_at_time_limit`);
            # Slurm saw it exit with an error before the limit: the job's own record stays.
            log.error("job %s %s: %s", config.hydra.job.num, previous["status"],
                      previous.get("error", reason))  # fmt: skip
            value = None
        else:
            log.error("job %s %s: %s", config.hydra.job.num, status, reason)
            record_failure(run_dir, task_cfg, status, reason)
            value = None
    finally:
        hydra_config.cfg = saved
    return JobReturn(
        overrides=list(config.hydra.overrides.task),
        cfg=task_cfg,
        working_dir=os.getcwd(),
        task_name=config.hydra.job.name,
        status=JobStatus.COMPLETED,
        _return_value=math.nan if value is None else value,
    )
