"""The stacked launcher's work: each group of jobs that share a program trains as one.

`hydra/launcher=stacked` (`hydra_plugins.regfw_stacked_launcher`) composes every job's config,
then `launch` groups the jobs (`regfw.sweeps.stacking`), trains each group of two or more with
`regfw.training.stacked.train_stack`, and runs the others one after another in this process, as
Hydra's basic launcher would, saying which and why. Every job gets its own folder exactly as a
run alone writes it (its `.hydra/` record, `train.log`, TensorBoard events, checkpoints,
`metrics.json`, `model.keras`), and Hydra's callbacks see every job start and end.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from regfw.errors import RegfwError
from regfw.runs import folder
from regfw.sweeps import stacking
from regfw.training import console

log = logging.getLogger(__name__)


class Job:
    """One job of the sweep: its full config (Hydra's node too), folder and plan."""

    def __init__(self, config: DictConfig, index: int, overrides: Sequence[str]) -> None:
        from hydra.core.hydra_config import HydraConfig

        self.config, self.index, self.overrides = config, index, list(overrides)
        with open_dict(config):
            config.hydra.job.id = index
            config.hydra.job.num = index
        HydraConfig.instance().set_config(config)
        sweep_dir = str(OmegaConf.select(config, "hydra.sweep.dir"))
        self.run_dir = Path(
            os.path.abspath(
                os.path.join(sweep_dir, str(OmegaConf.select(config, "hydra.sweep.subdir")))
            )
        )
        # The job's Hydra config as `set_config` made it, with its folder: Hydra's copy (about
        # 20 ms) is made once.
        view = HydraConfig.instance().cfg
        for node in (config.hydra.runtime, view.hydra.runtime):
            with read_write(node), open_dict(node):
                node.output_dir = str(self.run_dir)
        self._hydra_view: Any = view
        self.cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        OmegaConf.set_struct(self.cfg, bool(OmegaConf.is_struct(config)))  # as Hydra's job config
        self.where = f"hydra.sweep.dir={sweep_dir} (job {index})"
        try:
            self.plan = folder.plan_run(self.run_dir, self.cfg, self.where)
        except RegfwError:
            self.plan = None  # the job's own run says why, when it runs alone
        self.alone = stacking.why_alone(self.cfg)
        self._handlers: tuple[list[logging.Handler], int] | None = None

    @contextlib.contextmanager
    def current(self) -> Iterator[None]:
        """Makes this job's Hydra config and log file current (for its record and logs)."""
        from hydra.core.hydra_config import HydraConfig

        saved = HydraConfig.instance().cfg
        self._make_hydra_current()
        try:
            with self.own_logs():
                yield
        finally:
            HydraConfig.instance().cfg = saved

    def _make_hydra_current(self) -> None:
        """`HydraConfig.instance().set_config(self.config)`, with the copy made once."""
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().cfg = self._hydra_view

    @contextlib.contextmanager
    def own_logs(self) -> Iterator[None]:
        """Sends log lines where this job's run sends them (the console and its `train.log`).

        Hydra's `configure_log` (a `logging.config.dictConfig`, about 15 ms) runs once per job:
        the root logger gets the handlers it made for this job then, and gets them again each time
        after (a stack switches jobs every epoch), and its own back after each use; the job's
        file is closed after each use (a file handler opens it again when it writes).
        """
        root = logging.getLogger()
        saved = list(root.handlers), root.level
        if self._handlers is None:
            self._handlers = self._configure()
        root.handlers = list(self._handlers[0])
        _set_level(root, self._handlers[1])
        try:
            yield
        finally:
            for handler in self._handlers[0]:
                if isinstance(handler, logging.FileHandler):
                    handler.close()
            root.handlers = saved[0]
            _set_level(root, saved[1])

    def _configure(self) -> tuple[list[logging.Handler], int]:
        """The root logger's handlers and level as Hydra configures them for this job."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.core.utils import configure_log

        root = logging.getLogger()
        saved_handlers, saved_level = list(root.handlers), root.level
        saved_config = HydraConfig.instance().cfg
        self._make_hydra_current()  # its log file's path names the job
        try:
            configure_log(self.config.hydra.job_logging, self.config.hydra.verbose)
            return list(root.handlers), root.level
        finally:
            HydraConfig.instance().cfg = saved_config
            root.handlers = saved_handlers
            root.setLevel(saved_level)


def _set_level(logger: logging.Logger, level: int) -> None:
    """`logger.setLevel(level)` unless it has that level already.

    `setLevel` clears the cache of every logger of the process (thousands once Keras and JAX are
    imported): about 0.5 ms, twice per job and epoch of a stack.
    """
    if logger.level != level:
        logger.setLevel(level)


def launch(
    jobs: list[Job],
    max_stack: int,
    run_alone: Callable[[Job], Any],
    context: Any,
    budget: int | None = None,
) -> list[Any]:
    """Trains the jobs, stacked where they can be; returns Hydra's `JobReturn` of each, in order.

    Args:
        jobs: The sweep's jobs.
        max_stack: The most jobs one program trains (`hydra.launcher.max_stack`).
        run_alone: Runs one job as Hydra's basic launcher does (`run_job`).
        context: Hydra's context (its callbacks are called for every stacked job).
        budget: The bytes one program may take (None: half of the device's free memory).
    """
    results: dict[int, Any] = {}
    stackable = [j for j in jobs if not j.alone and j.plan and j.plan.action in ("fresh", "resume")]
    for job in jobs:
        if job.alone:
            log.info("job %d runs alone: %s", job.index, job.alone)
    by_epoch: dict[int, list[Job]] = {}
    for job in stackable:
        by_epoch.setdefault(job.plan.epochs_done, []).append(job)
    for members in by_epoch.values():
        for indices in stacking.groups([j.cfg for j in members], max_stack):
            group = [members[i] for i in indices]
            if len(group) == 1:
                log.info("job %d runs alone: no other job shares its program", group[0].index)
                continue
            results.update(_train_group(group, context, budget))
    for job in jobs:
        if job.index not in results:
            results[job.index] = run_alone(job)
    return [results[job.index] for job in jobs]


def _train_group(group: list[Job], context: Any, budget: int | None) -> dict[int, Any]:
    """Trains one stack.

    A stack that cannot be set up (a job's data or model is wrong) has written nothing: its jobs
    run one by one instead, and each records its own failure. A stack that fails while training
    records the failure in every job's folder.
    """
    from regfw.sweeps.callback import record_failure
    from regfw.training import stacked

    log.info("jobs %s train as one program", console.spans([str(j.index) for j in group]))
    with contextlib.ExitStack() as claims:
        claimed = []
        try:
            for job in group:
                with job.current():
                    context.callbacks.on_job_start(config=job.config, task_function=None)
                    claimed.append(
                        claims.enter_context(folder.claim(job.run_dir, job.cfg, job.where))
                    )

            def record() -> None:
                for job, claim in zip(group, claimed, strict=True):
                    with job.current():
                        claim.record(job.cfg)
                        for note in claim.plan.notes:
                            log.info(note)

            metrics = stacked.train_stack(
                [
                    stacked.StackedJob(j.cfg, j.run_dir, c.plan.epochs_done, j.current, j.own_logs)
                    for j, c in zip(group, claimed, strict=True)
                ],
                before_training=record,
                budget=budget,
            )
        except Exception as error:
            reason = f"{type(error).__name__}: {' '.join(str(error).split())}"
            if not claimed or not all(c.recorded for c in claimed):
                log.error(
                    "the stack of jobs %s could not be set up (%s); they run one by one",
                    console.spans([str(j.index) for j in group]),
                    reason,
                )
                return {}
            log.error(
                "the stack of jobs %s failed: %s",
                console.spans([str(j.index) for j in group]),
                reason,
            )
            metrics = []
            for job in group:
                with job.current():
                    record_failure(job.run_dir, job.cfg, "failed", reason)
                metrics.append({"objective": {"value": None}})
    returns = {}
    for job, result in zip(group, metrics, strict=True):
        returns[job.index] = _job_return(job, result)
        with job.current():
            context.callbacks.on_job_end(config=job.config, job_return=returns[job.index])
    return returns


def _job_return(job: Job, metrics: dict[str, Any]) -> Any:
    from hydra.core.utils import JobReturn, JobStatus

    ret = JobReturn()
    ret.cfg, ret.hydra_cfg = job.cfg, job.config  # each job's own, never changed after
    ret.overrides, ret.working_dir, ret.task_name = job.overrides, os.getcwd(), "train"
    value = metrics["objective"]["value"]
    ret.return_value = math.nan if value is None else value
    ret.status = JobStatus.COMPLETED
    return ret
