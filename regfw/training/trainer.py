"""Builds the compiled model for a config, fits it and writes the run's outputs.

Outputs of a run folder: `metrics.json`, `model.keras`, and TensorBoard event files in `train/` and
`validation/` and regfw's own (layout, HParams session) beside them (`.hydra/` when the run comes
from `train.py`). What the run says on the console and in `train.log`: `regfw.training.console`.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import keras
from omegaconf import DictConfig, OmegaConf

from regfw.build import data, models, plugins
from regfw.build.attach import PenaltyTerm, attach_constraints, attach_penalties
from regfw.build.instantiate import keras_object
from regfw.config.schema import validate
from regfw.errors import RunFolderError
from regfw.runs import atomic, folder
from regfw.training import (
    checkpoints,
    console,
    distribute,
    hparams,
    memory,
    pipeline,
    seeding,
)
from regfw.training.callbacks import make_callbacks
from regfw.training.divergence import DivergenceGuard
from regfw.training.metrics import keras_only_compile_config, loss_and_metrics

log = logging.getLogger(__name__)


def build_optimizer(cfg: DictConfig) -> keras.optimizers.Optimizer:
    """Builds the optimizer the `optimizer` group names (any of Keras's, or yours by `_target_`).

    Decoupled weight decay (AdamW's, or any optimizer's `weight_decay`) leaves biases out.
    """
    optimizer = keras_object("optimizer", "optimizer", cfg)
    if getattr(optimizer, "weight_decay", None):
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    return optimizer


def build(cfg: DictConfig) -> tuple[keras.Model, list[PenaltyTerm]]:
    """Builds the model for `cfg`, attaches its penalty terms and compiles it.

    Model, penalties and optimizer are created under `trainer.strategy` and `trainer.precision`.

    Returns:
        The compiled model and its penalty terms.
    """
    validate(cfg)
    plugins.load(cfg.get("plugins") or [])
    with distribute.scope(cfg.trainer):
        model = models.build(cfg.model, tuple(cfg.data.input_shape), cfg.data.num_classes)
        terms = attach_penalties(model, cfg)
        attach_constraints(model, cfg)
        loss, metrics, weighted = loss_and_metrics(cfg.data.num_classes, cfg.data.get("loss"))
        model.compile(
            optimizer=build_optimizer(cfg.optimizer),
            loss=loss,
            metrics=metrics,
            weighted_metrics=weighted,
            jit_compile=jit_compile(cfg.trainer),
        )
    # model.keras records only Keras's own objects, so plain Keras loads it (see metrics.py).
    model.get_compile_config = functools.partial(keras_only_compile_config, model, weighted)
    return model, terms


def jit_compile(trainer: DictConfig) -> bool:
    """`trainer.jit_compile`; unset: compiled on JAX (without it JAX runs op by op), not on TF."""
    if trainer.jit_compile is not None:
        return trainer.jit_compile
    return keras.config.backend() == "jax"


def build_model(cfg: DictConfig) -> keras.Model:
    """Returns the compiled Keras model for `cfg`, penalties attached (see `build`)."""
    return build(cfg)[0]


def load_model(path: str | Path) -> keras.Model:
    """The model a run saved, compiled as the run trained it.

    The run's config (`.hydra/config.yaml` beside `model.keras`) rebuilds the model with its
    penalties, constraints, metrics (`data_loss`) and optimizer settings (AdamW's bias
    exclusion), importing its plugins; then `model.keras` gives the weights, the optimizer state
    and the power-iteration vectors. `evaluate` on it reproduces the run's `loss` and `data_loss`.

    Args:
        path: A run folder, or the `model.keras` in one.

    Raises:
        regfw.errors.RunFolderError: If there is no `model.keras` or no config beside it.
    """
    path = Path(path)
    model_file = path / folder.MODEL if path.is_dir() else path
    config_file = model_file.parent / folder.CONFIG
    if not model_file.is_file() or not config_file.is_file():
        raise RunFolderError(
            f"{path}: expected a run folder (or its model.keras) with model.keras and "
            f"{folder.CONFIG}; a model.keras on its own loads with keras.saving.load_model"
        )
    cfg = OmegaConf.load(config_file)
    seeding.set_random_seed(cfg.trainer.seed)
    model, _ = build(cfg)
    model.optimizer.build(model.trainable_variables)
    model.load_weights(model_file)
    return model


def default_output_dir() -> Path:
    """The run folder: Hydra's when called from `train.py`, else a new `outputs/<date>/<time>`."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path("outputs") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S-%f")


def final_metrics(history: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """The last epoch's logs, by section (train, validation, penalty, penalty_scale, diagnostics).

    A value that is not finite becomes None (null in `metrics.json`).
    """
    final = {k: float(v[-1]) if math.isfinite(v[-1]) else None for k, v in history.items()}
    sections = {
        "validation": "val_",
        "penalty": "penalty/",
        "penalty_scale": "penalty_scale/",
        "diagnostics": "diagnostics/",
    }
    grouped = {
        name: {k.removeprefix(prefix): v for k, v in final.items() if k.startswith(prefix)}
        for name, prefix in sections.items()
    }
    grouped["train"] = {
        k: v for k, v in final.items() if not k.startswith(tuple(sections.values()))
    }
    return grouped


def objective(cfg: DictConfig, metrics: dict[str, Any]) -> dict[str, Any]:
    """What the run returns to a sweeper: `trainer.monitor`'s final value."""
    monitor = cfg.trainer.monitor
    scope = metrics["validation"] if monitor.startswith("val_") else metrics["train"]
    return {"name": monitor, "value": scope.get(monitor.removeprefix("val_"))}


def fit(
    cfg: DictConfig,
    model: keras.Model,
    split: data.Split,
    callbacks: list[Any],
    initial_epoch: int = 0,
) -> keras.callbacks.History:
    """Fits a model built by `build(cfg)` on `split` through the input pipeline.

    Epoch `e` sees the same batches whether or not the run resumed at `initial_epoch`, and on
    either backend (`regfw.training.pipeline`).
    """
    batch_size, seed = cfg.trainer.batch_size, cfg.trainer.seed
    class_weight = data.class_weights(
        OmegaConf.to_container(cfg.trainer, resolve=True)["class_weight"],
        split.y_train,
        split.num_classes,
    )
    # verbose=0: regfw's epoch line instead of Keras's (`regfw.training.console`); the dataset
    # shuffles itself, seeded.
    common = {"epochs": cfg.trainer.epochs, "initial_epoch": initial_epoch,
              "callbacks": callbacks, "verbose": 0, "shuffle": False}  # fmt: skip
    if keras.config.backend() == "jax":
        train_data = pipeline.EpochBatches(split.x_train, split.y_train, batch_size, seed,
                                           initial_epoch, class_weight)  # fmt: skip
        common["callbacks"] = [pipeline.EpochOfBatches(train_data), *callbacks]
        return model.fit(train_data, validation_data=(split.x_val, split.y_val),
                         validation_batch_size=batch_size, **common)  # fmt: skip
    train_data, steps = pipeline.shuffled_batches(
        split.x_train, split.y_train, batch_size, seed, first_epoch=initial_epoch
    )
    return model.fit(
        train_data,
        steps_per_epoch=steps,
        validation_data=pipeline.ordered_batches(split.x_val, split.y_val, batch_size),
        class_weight=class_weight,
        **common,
    )


def train(
    cfg: DictConfig,
    output_dir: str | Path | None = None,
    *,
    where: str | None = None,
    new_folders: tuple[Path, ...] = (),
) -> dict[str, Any]:
    """Trains the model `cfg` describes and writes the run's outputs.

    The run folder must be new or empty; with `trainer.resume=true` it may hold an earlier run of
    the same experiment, which is then skipped if it completed or continued from its last
    checkpoint (`regfw.runs.folder`). Everything that can reject the run is checked before
    anything is written. Training stops at the first non-finite loss (status `diverged`, with
    the reason; the last good checkpoint is kept).

    Args:
        cfg: A composed config (see `regfw.compose`).
        output_dir: The run folder; by default Hydra's run folder or a new `outputs/<date>/<time>`.
        where: How to name the run folder in messages (default `output_dir=<folder>`).
        new_folders: Folders created for this run before it started (by Hydra), removed again if
            the run is rejected while they are empty.

    Returns:
        The contents of `metrics.json`: status (`completed` or `diverged` with its `error`), final
        train and validation metrics, final penalty values and scales, epochs run, wall time,
        output folder and the objective (`trainer.monitor`).

    Raises:
        regfw.errors.UserError: For a config, data, plugin or run-folder mistake (nothing
            written).
        regfw.errors.OutputError: If an output cannot be written (the previous files are kept).
    """
    validate(cfg)
    run_dir = Path(output_dir) if output_dir is not None else default_output_dir()
    where = where or f"output_dir={run_dir}"
    with folder.claim(run_dir, cfg, where, new_folders) as claimed:
        plan = claimed.plan
        if plan.action == "skip":
            for note in plan.notes:
                log.info(note)
            return plan.previous
        distribute.prepare(cfg.trainer)  # GPU settings and multi-worker set-up precede TF's use
        if cfg.trainer.deterministic and keras.config.backend() == "tensorflow":
            import tensorflow as tf  # not imported by a JAX run

            tf.config.experimental.enable_op_determinism()  # JAX on CPU is deterministic as is
        keras.backend.clear_session(free_memory=True)
        memory.forget_gradient_functions()  # what clear_session leaves of earlier runs (memory.py)
        seeding.set_random_seed(cfg.trainer.seed)
        split = data.load(cfg.data, seed=cfg.trainer.seed)
        model, terms = build(cfg)
        initial_epoch, message = 0, None
        if plan.action in ("resume", "finish"):
            initial_epoch, message = checkpoints.restore(model, run_dir, where)
        claimed.record(cfg)
        console.say(f"run folder {console.shown_path(run_dir)}")
        skipped = [
            f"penalty term '{t.name}' leaves out {entry}" for t in terms for entry in t.skipped
        ]
        for note in [*plan.notes, *([message] if message else []), *skipped]:
            log.info(note)
        with console.warnings_logged():
            metrics = _fit_and_write(cfg, model, terms, split, run_dir, initial_epoch, plan)
        for line in console.summary_lines(metrics):
            console.say(line)
        return metrics


def _fit_and_write(
    cfg: DictConfig,
    model: keras.Model,
    terms: list[PenaltyTerm],
    split: data.Split,
    run_dir: Path,
    initial_epoch: int,
    plan: folder.Plan,
) -> dict[str, Any]:
    """Fits; writes `model.keras`, `metrics.json` and the HParams session; drops the checkpoint.

    When the checkpoint already holds every epoch (a run killed before its `metrics.json`), its
    last epoch's logs give the final metrics, exactly as the uninterrupted run would have.
    """
    guard = DivergenceGuard(terms)
    start = time.perf_counter()
    if initial_epoch >= cfg.trainer.epochs:  # killed after its last checkpoint: finish it
        last_logs = (plan.checkpoint or {}).get("logs", {})
        history = {k: [math.nan if v is None else v] for k, v in last_logs.items()}
        epochs_run = initial_epoch
    else:
        callbacks = make_callbacks(cfg, run_dir, terms, guard)
        with distribute.fit_scope(cfg.trainer):
            fitted = fit(cfg, model, split, callbacks, initial_epoch)
        history, epochs_run = fitted.history, initial_epoch + len(fitted.epoch)
    metrics = {
        "status": "diverged" if guard.reason else "completed",
        "epochs_run": epochs_run,
        "wall_time_s": round(time.perf_counter() - start, 3),
        "rss_mb": memory.resident_memory_mb(),  # at the end of the run: growth over a sweep
        "output_dir": str(run_dir),
        **final_metrics(history),
    }
    if guard.reason:
        metrics["error"] = guard.reason
    else:
        checkpoints.save(model, run_dir / folder.MODEL)
    metrics["objective"] = objective(cfg, metrics)
    atomic.write_json(run_dir / folder.METRICS, metrics)
    hparams.write_run(run_dir, cfg, metrics["status"])
    if not guard.reason:
        checkpoints.remove(run_dir)  # only now: model.keras and metrics.json are on disk
    return metrics
