"""A bare Hydra app on regfw's config tree: the start-up baseline (no checks, no regfw import)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Does nothing with the composed config."""


if __name__ == "__main__":
    main()
