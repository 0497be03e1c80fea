"""regfw's command line: `python train.py [group=option ...] [key=value ...]` (see README.md)."""

import atexit
import gc

import hydra
from omegaconf import DictConfig

from regfw import cli


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Trains one run and returns its objective (for sweepers)."""
    return cli.run(cfg)


if __name__ == "__main__":
    # Python does not promise to finalize objects still alive at exit, and regfw closes what it
    # writes itself: freezing them skips the interpreter's last full garbage collection (about
    # 0.6 s after a 64-job stacked sweep, whose heap holds every job's config and Keras's modules).
    atexit.register(gc.freeze)
    cli.check_command_line()
    main()
