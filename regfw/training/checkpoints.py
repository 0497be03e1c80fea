"""Per-epoch training state in the run folder, written atomically, and resuming from it.

`<run>/checkpoint/` holds `state.weights.h5` (model and optimizer variables) and `state.json`
(epochs completed, the random-seed states of layers such as dropout). Both are written to a
temporary file and renamed, weights first, so a crash leaves the previous complete checkpoint.
The data order of an epoch depends only on `(trainer.seed, epoch)` (`regfw.training.pipeline`), so a
resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import keras
from keras import ops

from regfw.runs import atomic
from regfw.training.divergence import DivergenceGuard

FOLDER = "checkpoint"
WEIGHTS = "state.weights.h5"
STATE = "state.json"


def _seed_states(model: keras.Model) -> list[Any]:
    """The state variables of every random-seed generator in the model (dropout, noise...)."""
    names = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in names and "seed_generator" in v.path]


class Checkpoint(keras.callbacks.Callback):
    """Saves the training state after every `every`-th epoch whose loss is finite.

    Args:
        run_dir: The run folder.
        guard: The run's divergence guard: nothing is saved once it has tripped, so the last
            good checkpoint stays.
        every: Save after epochs `every`, `2 * every`, ... (`trainer.checkpoint_every`).
    """

    def __init__(self, run_dir: Path, guard: DivergenceGuard, every: int = 1) -> None:
        super().__init__()
        self.folder = Path(run_dir) / FOLDER
        self.guard = guard
        self.every = every

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.guard.reason or (epoch + 1) % self.every:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{WEIGHTS}.{os.getpid()}.tmp.weights.h5"
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, self.folder / WEIGHTS)
        seeds = [ops.convert_to_numpy(v).tolist() for v in _seed_states(self.model)]
        atomic.write_json(
            self.folder / STATE, {"epochs_completed": epoch + 1, "seed_states": seeds}
        )


def restore(model: keras.Model, run_dir: Path) -> tuple[int, str]:
    """Loads the last checkpoint of `run_dir` into a compiled model.

    A checkpoint that cannot be read is moved aside (`checkpoint.corrupt-<time>`), never deleted,
    and the run starts from scratch.

    Returns:
        The number of epochs already completed (0 to start fresh) and a one-line message saying
        what happened.
    """
    folder = Path(run_dir) / FOLDER
    if not (folder / STATE).is_file():
        return 0, f"no checkpoint in {folder}; starting from scratch"
    try:
        state = json.loads((folder / STATE).read_text())
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(folder / WEIGHTS)
        seed_states = _seed_states(model)
        for variable, value in zip(seed_states, state["seed_states"], strict=True):
            variable.assign(value)
        epochs = int(state["epochs_completed"])
    except Exception as error:
        aside = folder.with_name(f"{FOLDER}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(folder, aside)
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return (
            0,
            f"checkpoint in {folder} is unreadable ({reason}); moved to {aside}, starting fresh",
        )
    return epochs, f"resuming from {folder} after epoch {epochs}"


def remove(run_dir: Path) -> None:
    """Deletes the checkpoint of a completed run (its final state is in model.keras)."""
    shutil.rmtree(Path(run_dir) / FOLDER, ignore_errors=True)
