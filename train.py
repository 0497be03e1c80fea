"""regfw's command line: `python train.py [group=option ...] [key=value ...]` (see README.md)."""

import hydra
from omegaconf import DictConfig

from regfw import cli


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Trains one run and returns its objective (for sweepers)."""
    return cli.run(cfg)


if __name__ == "__main__":
    cli.check_command_line()
    main()
