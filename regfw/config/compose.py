"""Where the config tree lives and how to compose it outside the command line (no TensorFlow)."""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

from omegaconf import DictConfig

GROUPS = ("model", "data", "penalty", "optimizer", "trainer", "experiment", "constraint",
          "callbacks")  # fmt: skip


def conf_dir() -> Path:
    """Returns the absolute path of the config tree (`conf/` of a checkout or installed)."""
    package = Path(__file__).resolve().parents[1]  # regfw/
    for candidate in (package / "conf", package.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"regfw's config tree (conf/config.yaml) is not beside {package}")


def compose(
    overrides: Sequence[str] = (), config_name: str = "config", return_hydra_config: bool = False
) -> DictConfig:
    """Composes the config as `python train.py <overrides>` would, from any working directory.

    Args:
        overrides: Command-line style overrides, e.g. `["penalty=l1", "penalty.scale=1e-3"]`.
        config_name: The primary config file in `conf/`.
        return_hydra_config: Keep Hydra's own `hydra` node (run and sweep folders, launcher).

    Returns:
        The composed config.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(
            config_name=config_name,
            overrides=list(overrides),
            return_hydra_config=return_hydra_config,
        )


def train_command(overrides: Iterable[str]) -> str:
    """The shell command that runs `train.py` with `overrides` (each quoted as the shell needs)."""
    return " ".join(["python train.py", *(shlex.quote(str(o)) for o in overrides)])
