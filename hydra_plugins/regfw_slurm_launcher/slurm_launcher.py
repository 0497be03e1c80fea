"""hydra-submitit-launcher's Slurm launcher, with the jobs Slurm stops recorded instead of fatal.

`hydra/launcher=submitit_slurm` runs this class: regfw's sweep callback puts it in place of the
plugin's before Hydra creates the launcher (Hydra only creates launchers from `hydra_plugins`,
and a config file of the same name would meet Hydra's deprecated automatic schema matching). The
plugin's config, and so every `hydra.launcher.*` key, is unchanged. What it adds is in
`regfw.sweeps.slurm`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from omegaconf import OmegaConf

from regfw.sweeps import slurm

try:
    from hydra_plugins.hydra_submitit_launcher import config as submitit_config
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher
except ImportError:  # regfw installed without its `sweeps` extra: no Slurm launcher to extend
    submitit_launcher = None

log = logging.getLogger(__name__)

if submitit_launcher is not None:

    class SlurmLauncher(submitit_launcher.SlurmLauncher):
        """hydra-submitit-launcher's `SlurmLauncher`; a job Slurm stops does not end the sweep.

        In each job, submitit's "timed out, not requeued" becomes a regfw `timeout` record, and a
        job submitit requeues continues from its checkpoint. In the submitting process, a job
        that left no result (cancelled, killed at its time limit, out of memory) is recorded in
        its folder with Slurm's state, and the other jobs' results are kept.
        """

        def __call__(
            self,
            sweep_overrides: list[str],
            job_dir_key: str,
            job_num: int,
            job_id: str,
            singleton_state: dict[type, Singleton],
        ) -> JobReturn:
            slurm.stop_at_time_limit(self.params["timeout_min"], self.params["max_num_timeout"])
            return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)

        def checkpoint(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> Any:
            """Resubmits the job with `trainer.resume=true`: it continues from its checkpoint."""
            return super().checkpoint(slurm.resumed(sweep_overrides), *args, **kwargs)

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            from submitit.core.utils import UncompletedJobError

            jobs = self._submit(job_overrides, initial_job_idx)
            returns = []
            for num, (job, overrides) in enumerate(zip(jobs, job_overrides, strict=True)):
                try:
                    returns.append(job.results()[0])
                except UncompletedJobError as error:  # and FailedJobError, its subclass
                    config = slurm.job_config(
                        self.hydra_context, self.config, overrides, initial_job_idx + num,
                        job.job_id,
                    )  # fmt: skip
                    returns.append(slurm.record_unfinished(job, config, error))
            return returns

        def _submit(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> list[Any]:
            """Submits the jobs as one Slurm array, as the plugin's `launch` does (1.2.0).

            The plugin's `launch` submits and collects in one method, and collecting is what
            changes here.
            """
            import submitit

            assert self.config is not None
            init_keys = {"submitit_folder", "max_num_timeout"}
            executor = submitit.AutoExecutor(
                cluster=self._EXECUTOR,
                folder=self.params["submitit_folder"],
                **{f"{self._EXECUTOR}_max_num_timeout": self.params["max_num_timeout"]},
            )
            shared = set(OmegaConf.structured(submitit_config.BaseQueueConf).keys())
            executor.update_parameters(
                **{
                    key if key in shared else f"{self._EXECUTOR}_{key}": value
                    for key, value in self.params.items()
                    if key not in init_keys
                }
            )
            log.info(
                f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}"
            )
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if "mode" in self.config.hydra.sweep:
                os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
            job_params = []
            for num, overrides in enumerate(job_overrides, start=initial_job_idx):
                log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
                job_params.append(
                    (list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}",
                     Singleton.get_state())
                )  # fmt: skip
            return executor.map_array(self, *zip(*job_params, strict=True))
