"""Per-epoch training state in the run folder, written atomically, and resuming from it.

`<run>/checkpoint/` holds `epoch-<n>.npz`, every variable of the training state by its path (the
model's weights, random-seed states of layers such as dropout, the penalties' scales and
power-iteration blocks, and the optimizer's variables), and `state.json`, which names that file and
records the epochs completed and the last epoch's logs. Each is written to a temporary file and
renamed: the new state file first, then `state.json`, then the old state file is deleted, so a
crash or a full disk at any point leaves a `state.json` whose state file holds that same epoch.
The state is an `.npz` archive written from memory (a few milliseconds, for every epoch of every
job of a stacked sweep too); the final `model.keras` is Keras's own format. The data order of an
epoch depends only on `(trainer.seed, epoch)` (`regfw.training.pipeline`), so a resumed run sees
the same batches as an uninterrupted one; the last epoch's logs let a run that was killed after
its last checkpoint but before `metrics.json` finish with exactly the metrics it would have
written.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import io
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from regfw.errors import RunFolderError
from regfw.runs import atomic
from regfw.runs.folder import CHECKPOINT as FOLDER
from regfw.training.divergence import DivergenceGuard

STATE = "state.json"
STATE_PATTERN = "epoch-{epoch:05d}.npz"
OWN_FILES = ("epoch-*.npz", STATE, ".epoch-*.npz.*.tmp", f".{STATE}.*.tmp")


def training_state(model: keras.Model) -> dict[str, Any]:
    """Every variable a resumed run needs, by `model/<path>` and `optimizer/<path>`."""
    state = {f"model/{v.path}": v for v in model.variables}
    if model.optimizer is not None:
        state.update({f"optimizer/{v.path}": v for v in model.optimizer.variables})
    return state


def host_state(model: keras.Model) -> dict[str, np.ndarray]:
    """`training_state` as host (NumPy) arrays."""
    return {k: ops.convert_to_numpy(v) for k, v in training_state(model).items()}


def _plain(value: Any) -> Any:
    """A log value as JSON: a float, or None when it is not finite."""
    number = float(ops.convert_to_numpy(value))
    return number if math.isfinite(number) else None


# The object types `keras.src.saving.saving_lib.get_attr_skipset` knows that a model, its
# optimizer, loss and metrics are made of.
_SKIPSET_TYPES = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")


def _cache_keras_skipsets() -> None:
    """Puts Keras's saving skip-sets where its own cache looks for them.

    Keras 3.15's `get_attr_skipset` stores each set under `saving_attr_skipset_<type>` but looks
    under `saving_attr_skiplist_<type>`, so it never finds it: every save builds a reference
    `Layer`, `Optimizer` and `Metric` again (about 10 ms of a `model.save`'s 24 ms for the
    default MLP). This stores Keras's own sets under the key it reads (after each
    `clear_session`, which clears them); the saved file is the same.
    """
    from keras.src.backend.common import global_state
    from keras.src.saving import saving_lib

    for kind in _SKIPSET_TYPES:
        key = f"saving_attr_skiplist_{kind}"
        if global_state.get_global_attribute(key) is None:
            global_state.set_global_attribute(key, saving_lib.get_attr_skipset(kind))


def save(model: keras.Model, path: Path) -> None:
    """Saves the model as a `.keras` file (config, weights, optimizer state), atomically.

    Raises:
        regfw.errors.OutputError: If the disk is full or the folder not writable (the previous
            file is kept).
    """
    _cache_keras_skipsets()
    with atomic.replacing(path, suffix=".keras") as tmp:
        model.save(tmp)


def write(folder: Path, epoch: int, arrays: dict[str, np.ndarray], logs: dict[str, Any]) -> None:
    """Writes one checkpoint: the state after `epoch` epochs and that epoch's logs.

    Args:
        folder: The run's `checkpoint/` folder.
        epoch: Epochs completed.
        arrays: The training state, by key (`training_state`).
        logs: The last epoch's logs.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = STATE_PATTERN.format(epoch=epoch)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic.write_bytes(folder / name, buffer.getvalue())
    previous = read_state(folder)
    atomic.write_json(folder / STATE, {
        "state_file": name,
        "epochs_completed": epoch,
        "logs": {k: _plain(v) for k, v in logs.items()},
    })  # fmt: skip
    old = (previous or {}).get("state_file")
    if old and old != name:
        (folder / old).unlink(missing_ok=True)


class Checkpoint(keras.callbacks.Callback):
    """Saves the training state after every `every`-th epoch whose loss is finite.

    With a `writer` (a stacked sweep's: one thread for all its jobs), the files are written there
    while training goes on, in the order they were asked for: the state is copied to host arrays
    first, and `on_train_end` waits for this run's writes (and raises the first one's error, as
    the next epoch's checkpoint does). A write that has not started when the next epoch's is
    asked for is dropped: the newer state supersedes it, and training never waits for the disk
    (the folder always holds a whole checkpoint, at most a few epochs old).

    Args:
        run_dir: The run folder.
        guard: The run's divergence guard: nothing is saved once it has tripped, so the last
            good checkpoint stays.
        every: Save after epochs `every`, `2 * every`, ... (`trainer.checkpoint_every`).
        writer: Writes in the background (default: each checkpoint is written before
            `on_epoch_end` returns).
        state: Returns the training state as host arrays, by `training_state`'s keys (default:
            the model's variables, converted); a stacked job's come from its stack.
    """

    def __init__(
        self,
        run_dir: Path,
        guard: DivergenceGuard,
        every: int = 1,
        writer: concurrent.futures.Executor | None = None,
        state: Callable[[], dict[str, np.ndarray]] | None = None,
    ) -> None:
        super().__init__()
        self.folder = Path(run_dir) / FOLDER
        self.guard = guard
        self.every = every
        self.writer = writer
        self.state = state
        self.pending: list[concurrent.futures.Future[None]] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.guard.reason or (epoch + 1) % self.every:
            return
        arrays = self.state() if self.state else host_state(self.model)
        if self.writer is None:
            write(self.folder, epoch + 1, arrays, logs or {})
            return
        for future in self.pending:
            future.cancel()  # only one that has not started: superseded by this epoch's
        self.wait(done_only=True)
        self.pending.append(
            self.writer.submit(write, self.folder, epoch + 1, arrays, dict(logs or {}))
        )

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.wait()

    def wait(self, done_only: bool = False) -> None:
        """Waits for this run's writes (only collects finished ones if `done_only`).

        Raises:
            regfw.errors.OutputError: As `write`, for the first write that failed.
        """
        finished = [f for f in self.pending if f.done()] if done_only else self.pending
        self.pending = [f for f in self.pending if f not in finished]
        for future in finished:
            if not future.cancelled():
                future.result()


def read_state(folder: Path) -> dict[str, Any] | None:
    """A checkpoint folder's `state.json`, or None if there is none or it is unreadable."""
    try:
        return json.loads((folder / STATE).read_text())
    except (OSError, ValueError):
        return None


def _architecture_change(saved: dict[str, tuple[int, ...]], model: keras.Model) -> str | None:
    """Says how the checkpoint's weights differ from the model's, or None if they match."""
    old = {k: tuple(s) for k, s in saved.items() if k.startswith("model/")}
    new = {k: tuple(v.shape) for k, v in training_state(model).items() if k.startswith("model/")}
    if old == new:
        return None
    changes = [
        f"{key.removeprefix('model/')} {old.get(key, 'absent')} -> {new.get(key, 'absent')}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
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
        with np.load(folder / state["state_file"], allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        if change := _architecture_change({k: a.shape for k, a in arrays.items()}, model):
            raise RunFolderError(f"{where}: cannot resume: {change}")
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        for key, variable in training_state(model).items():
            variable.assign(arrays[key])
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

    Only regfw's own files go (`state.json`, the `epoch-*.npz` state files and temporaries a
    killed write left); the folder goes only if nothing else is in it.
    """
    folder = Path(run_dir) / FOLDER
    for pattern in OWN_FILES:
        for path in folder.glob(pattern):
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()
