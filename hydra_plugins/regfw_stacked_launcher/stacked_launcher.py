"""`hydra/launcher=stacked`: a Hydra launcher that trains a sweep's jobs as vectorized programs.

Jobs that differ only in numbers a program can carry per job (penalty scales and parameters,
seeds, optimizer hyperparameters, schedule numbers) train together as one `jax.vmap`-ed program;
the others run one after another in this process. See `regfw.sweeps.stacked` and the README's
"Stacked sweeps". Needs `trainer.backend=jax`.
"""

# No `from __future__ import annotations`: Hydra imports plugin modules in a way that leaves
# dataclasses unable to resolve string annotations.
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_loader import ConfigLoader
from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass
class StackedLauncherConf:
    """The launcher's settings."""

    _target_: str = "hydra_plugins.regfw_stacked_launcher.stacked_launcher.StackedLauncher"
    max_stack: int = 64  # the most jobs one program trains; larger groups are split
    # The memory one program may take, in MiB (null: half of the device's free memory; on CPU
    # half of MemAvailable). A group whose jobs need more is split into smaller stacks.
    memory_mb: Optional[float] = None  # noqa: UP045 (OmegaConf reads Optional, not X | None)


ConfigStore.instance().store(
    group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="regfw"
)


class ComposedOnce(ConfigLoader):
    """Hydra's config loader, keeping the configs a sweeper composes for this launcher to take.

    Hydra's sweepers compose every job's config before launching a batch
    (`Sweeper.validate_batch_is_legal`, "this repeats work the launcher will do, but as the
    launcher may be performing this in a different process..."); this launcher runs its jobs in
    the sweeper's process, so it takes those configs instead of composing each again (about
    0.2 s a job). What the launcher does not take is dropped when it has launched. Jobs that
    differ from a composed one only in values are copies of it (`regfw.sweeps.job_configs`).

    Args:
        loader: The loader of Hydra's context.
    """

    def __init__(self, loader: ConfigLoader) -> None:
        from regfw.sweeps.job_configs import JobConfigs

        self.loader = loader
        self.configs = JobConfigs(loader.load_sweep_config)
        self.composed: dict[tuple[int, tuple[str, ...]], DictConfig] = {}

    def load_sweep_config(self, master_config: DictConfig, sweep_overrides: list) -> DictConfig:
        config = self.configs.load(master_config, list(sweep_overrides))
        self.composed[id(master_config), tuple(sweep_overrides)] = config
        return config

    def take(self, master_config: DictConfig, sweep_overrides: list) -> DictConfig:
        """The job's config: the one the sweeper composed, else a new one."""
        config = self.composed.pop((id(master_config), tuple(sweep_overrides)), None)
        if config is None:
            config = self.configs.load(master_config, list(sweep_overrides))
        return config

    def load_configuration(self, *args: Any, **kwargs: Any) -> DictConfig:
        return self.loader.load_configuration(*args, **kwargs)

    def get_search_path(self) -> Any:
        return self.loader.get_search_path()

    def get_sources(self) -> Any:
        return self.loader.get_sources()

    def list_groups(self, parent_name: str) -> Any:
        return self.loader.list_groups(parent_name)

    def get_group_options(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.get_group_options(*args, **kwargs)

    def compute_defaults_list(self, *args: Any, **kwargs: Any) -> Any:
        return self.loader.compute_defaults_list(*args, **kwargs)


class StackedLauncher(Launcher):
    """Launches a sweep's jobs, stacked where they can be.

    Args:
        max_stack: The most jobs one program trains.
        memory_mb: The memory one program may take (None: from the device's free memory).
    """

    def __init__(self, max_stack: int = 64, memory_mb: float | None = None) -> None:
        self.max_stack, self.memory_mb = max_stack, memory_mb
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        if not isinstance(hydra_context.config_loader, ComposedOnce):
            # The sweeper holds this same context: it composes through the wrapper.
            hydra_context.config_loader = ComposedOnce(hydra_context.config_loader)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from regfw.sweeps import stacked

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs, stacked where they share a program")
        jobs = []
        for offset, overrides in enumerate(job_overrides):
            index = initial_job_idx + offset
            log.info(f"\t#{index} : {' '.join(filter_overrides(overrides))}")
            config = self.hydra_context.config_loader.take(self.config, list(overrides))
            jobs.append(stacked.Job(config, index, overrides))
        budget = None if self.memory_mb is None else int(self.memory_mb * 2**20)
        returns = stacked.launch(
            jobs, self.max_stack, self._run_alone, self.hydra_context, budget=budget
        )
        self.hydra_context.config_loader.composed.clear()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns

    def _run_alone(self, job: Any) -> JobReturn:
        ret = run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=job.config,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret
