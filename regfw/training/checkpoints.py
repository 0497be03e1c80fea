"""Per-epoch training state in the run folder, written atomically, and resuming from it.

`<run>/checkpoint/` holds `epoch-<n>.keras` (the model with its optimizer variables, as Keras saves
it) and `state.json`, which names that file and records the epochs completed, the random-seed
states of layers such as dropout, the model's weight paths and shapes, and the last epoch's logs.
Each is written to a temporary file and renamed: the new model file first, then `state.json`,
then the old model file is deleted, so a crash or a full disk at any point leaves a `state.json`
whose model file holds the same epoch. (The `.keras` format writes its zip with Python's
`zipfile`, which turns a full disk into a clean error; h5py writing a `.weights.h5` file to a full
disk can crash the process.) The data order of an epoch depends only on `(trainer.seed, epoch)`
(`regfw.training.pipeline`), so a resumed run sees the same batches as an uninterrupted one; the
last epoch's logs let a run that was killed after its last checkpoint but before `metrics.json`
finish with exactly the metrics it would have written.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import keras
from keras import ops

from regfw.errors import RunFolderError
from regfw.runs import atomic
from regfw.runs.folder import CHECKPOINT as FOLDER
from regfw.training.divergence import DivergenceGuard

STATE = "state.json"
# The model of each checkpoint has its own file, named by epoch; `state.json` names the current
# one. Writing the new model file, then `state.json`, then deleting the old file means a crash at
# any point leaves a `state.json` whose model file exists and holds that same epoch.
WEIGHTS_PATTERN = "epoch-{epoch:05d}.keras"
OWN_FILES = ("epoch-*.keras", STATE, ".epoch-*.keras.*.tmp.keras", f".{STATE}.*.tmp")


def _seed_states(model: keras.Model) -> list[Any]:
    """The state variables of every random-seed generator in the model (dropout, noise...)."""
    names = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in names and "seed_generator" in v.path]


def weight_shapes(model: keras.Model) -> list[list[Any]]:
    """`[path, shape]` of every model weight: what a checkpoint must match to be loaded."""
    return [[v.path, list(v.shape)] for v in model.weights]


def _plain(value: Any) -> Any:
    """A log value as JSON: a float, or None when it is not finite."""
    number = float(ops.convert_to_numpy(value))
    return number if math.isfinite(number) else None


def save(model: keras.Model, path: Path) -> None:
    """Saves the model as a `.keras` file (config, weights, optimizer state), atomically.

    Raises:
        regfw.errors.OutputError: If the disk is full or the folder not writable (the previous
            file is kept).
    """
    with atomic.replacing(path, suffix=".keras") as tmp:
        model.save(tmp)


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
        weights = WEIGHTS_PATTERN.format(epoch=epoch + 1)
        save(self.model, self.folder / weights)
        previous = _read_state(self.folder)
        state = {
            "weights_file": weights,
            "epochs_completed": epoch + 1,
            "seed_states": [ops.convert_to_numpy(v).tolist() for v in _seed_states(self.model)],
            "weights": weight_shapes(self.model),
            "logs": {k: _plain(v) for k, v in (logs or {}).items()},
        }
        atomic.write_json(self.folder / STATE, state)
        old = (previous or {}).get("weights_file")
        if old and old != weights:
            (self.folder / old).unlink(missing_ok=True)


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / STATE).read_text())
    except (OSError, ValueError):
        return None


def _architecture_change(saved: list[list[Any]], model: keras.Model) -> str | None:
    """Says how the checkpoint's weights differ from the model's, or None if they match."""
    old = {path: tuple(shape) for path, shape in saved}
    new = {path: tuple(shape) for path, shape in weight_shapes(model)}
    if old == new:
        return None
    changes = [
        f"{path} {old.get(path, 'absent')} -> {new.get(path, 'absent')}"
        for path in sorted(set(old) | set(new))
        if old.get(path) != new.get(path)
    ]
    shown = "; ".join(changes[:4]) + ("; ..." if len(changes) > 4 else "")
    return f"the checkpoint was saved by a different model (weight, checkpoint -> model: {shown})"


def restore(model: keras.Model, run_dir: Path, where: str) -> tuple[int, str]:
    """Loads the last checkpoint of `run_dir` into a compiled model.

    A checkpoint that cannot be read is moved aside (`checkpoint.corrupt-<time>`), never deleted,
    and the run starts from scratch.

    Args:
        model: The compiled model.
        run_dir: The run folder.
        where: How to name the folder in messages (`hydra.run.dir=outputs/x`).

    Returns:
        The number of epochs already completed (0 to start fresh) and a one-line message saying
        what happened.

    Raises:
        RunFolderError: If the checkpoint holds another architecture's weights.
    """
    folder = Path(run_dir) / FOLDER
    if not (folder / STATE).is_file():
        return 0, f"no checkpoint in {folder}; starting from scratch"
    try:
        state = json.loads((folder / STATE).read_text())
        if "weights" in state and (change := _architecture_change(state["weights"], model)):
            raise RunFolderError(f"{where}: cannot resume: {change}")
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        model.load_weights(folder / state["weights_file"])
        seed_states = _seed_states(model)
        for variable, value in zip(seed_states, state["seed_states"], strict=True):
            variable.assign(value)
        epochs = int(state["epochs_completed"])
    except RunFolderError:
        raise
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
    """Deletes the checkpoint files regfw wrote (a completed run's state is in model.keras).

    Only regfw's own files go (`state.json`, the `epoch-*.keras` model files and temporaries a
    killed write left); the folder goes only if nothing else is in it.
    """
    folder = Path(run_dir) / FOLDER
    for pattern in OWN_FILES:
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()
