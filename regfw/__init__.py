"""regfw: declarative weight-regularization experiments for Keras 3.

The Python API (usable from a notebook):

    cfg = regfw.compose(["penalty=orthogonal", "penalty.scale=1e-4"])
    model = regfw.build_model(cfg)      # compiled keras.Model, penalties attached
    metrics = regfw.train(cfg)          # fits, writes outputs, returns final metrics
    model = regfw.load_model(metrics["output_dir"])  # compiled again, penalties attached
    regfw.penalties.get("l1", alpha=0.1, scale=1e-3)

Importing `regfw` does not import TensorFlow; `build_model`, `train` and `regfw.penalties` do
(`build_model`, `train` and `load_model` first set the Keras backend the config asks for,
`trainer.backend`, if Keras is not imported yet).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regfw.config import backend
from regfw.config.compose import compose

if TYPE_CHECKING:
    import keras
    from omegaconf import DictConfig

__all__ = ["build_model", "compose", "load_model", "penalties", "train"]
__version__ = "0.1.0"


def build_model(cfg: DictConfig) -> keras.Model:
    """Returns the compiled Keras model for `cfg`, with its penalties attached."""
    backend.use(cfg.trainer)
    from regfw.training.trainer import build_model as _build_model

    return _build_model(cfg)


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> dict[str, Any]:
    """Trains the model `cfg` describes; returns its final metrics (`regfw.training.trainer`)."""
    backend.use(cfg.trainer)
    from regfw.training.trainer import train as _train

    return _train(cfg, output_dir)


def load_model(path: str | Path) -> keras.Model:
    """The model a run saved, with its penalties, constraints, metrics and optimizer settings.

    Args:
        path: A run folder, or the `model.keras` in one (see `regfw.training.trainer.load_model`).
    """
    from omegaconf import OmegaConf

    run_dir = Path(path) if Path(path).is_dir() else Path(path).parent
    config = run_dir / ".hydra" / "config.yaml"
    # The run's backend if Keras is not imported yet; else the current one (either loads it).
    if config.is_file() and "keras" not in sys.modules:
        backend.use(OmegaConf.load(config).trainer)
    from regfw.training.trainer import load_model as _load_model

    return _load_model(path)


def __getattr__(name: str) -> Any:
    if name == "penalties":
        return importlib.import_module("regfw.penalties")
    raise AttributeError(f"module 'regfw' has no attribute {name!r}")
