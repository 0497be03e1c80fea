"""Keras callbacks: penalty values and weight diagnostics per epoch, logged to TensorBoard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from keras import ops
from omegaconf import DictConfig, OmegaConf

from regfw.build.attach import PenaltyTerm
from regfw.build.instantiate import keras_object
from regfw.config.schedules import multiplier
from regfw.training import hparams
from regfw.training.checkpoints import Checkpoint
from regfw.training.diagnostics import WeightDiagnostics
from regfw.training.divergence import DivergenceGuard

# Log keys regfw adds; TensorBoard gets them under these exact tags (Keras would prefix "epoch_").
OWN_KEYS = ("data_loss", "penalty/", "penalty_scale/", "diagnostics/")


def is_own_key(key: str) -> bool:
    """Whether a log key is one of regfw's (with or without Keras's `val_` prefix)."""
    key = key.removeprefix("val_")
    return any(key == k or (k.endswith("/") and key.startswith(k)) for k in OWN_KEYS)


def penalty_values(terms: list[PenaltyTerm]) -> dict[str, float]:
    """Returns `penalty/<term>` (the scaled amount each term adds to the loss) and `penalty/total`.

    Args:
        terms: The model's penalty terms.
    """
    values = {
        f"penalty/{t.name}": float(sum(ops.convert_to_numpy(t.value_of(v)) for v in t.variables))
        for t in terms
    }
    values["penalty/total"] = float(sum(values.values()))
    return values


class PenaltyMonitor(keras.callbacks.Callback):
    """Schedules each term's scale per epoch and logs penalty values and scales.

    At the start of an epoch it sets each scheduled term's scale; at the end it adds
    `penalty/<term>`, `penalty/total` and `penalty_scale/<term>` to the epoch logs, for History,
    TensorBoard and metrics.json. Scales are assigned to the penalties' `keras.Variable`s, so the
    compiled train step is not retraced.

    Args:
        terms: The model's penalty terms.
    """

    def __init__(self, terms: list[PenaltyTerm]) -> None:
        super().__init__()
        self.terms = terms

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for term in self.terms:
            if term.schedule and term.schedule.get("name", "constant") != "constant":
                term.penalty.set_scale(term.base_scale * multiplier(term.schedule, epoch))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs.update(penalty_values(self.terms))
            logs.update({f"penalty_scale/{t.name}": t.penalty.scale for t in self.terms})


class RegfwTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, plus regfw's tags and the run's config as a text summary.

    Keras's own metrics keep their `epoch_<name>` tags; regfw's keys (`data_loss`,
    `penalty/total`, `penalty/<term>`) are written under exactly those names, in `train/` or, for
    `val_` keys, in `validation/`.

    Args:
        config_yaml: The composed config, written once as the `config` text summary.
        **kwargs: Passed to `keras.callbacks.TensorBoard`.
    """

    def __init__(self, config_yaml: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_yaml = config_yaml

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self.config_yaml:
            text = "\n".join("    " + line for line in self.config_yaml.splitlines())
            with self._train_writer.as_default():
                tf.summary.text("config", text, step=0)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Nothing: regfw logs per epoch (Keras would convert every batch's logs, ~2 ms)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        super().on_epoch_end(epoch, {k: v for k, v in logs.items() if not is_own_key(k)})
        own = {k: v for k, v in logs.items() if is_own_key(k)}
        for writer, prefix in ((self._train_writer, ""), (self._val_writer, "val_")):
            items = {
                k.removeprefix(prefix): v
                for k, v in own.items()
                if k.startswith("val_") == bool(prefix)
            }
            if items:
                with writer.as_default():
                    for tag, value in items.items():
                        tf.summary.scalar(tag, value, step=epoch)
                writer.flush()


def make_callbacks(
    cfg: DictConfig, run_dir: Path, terms: list[PenaltyTerm], guard: DivergenceGuard
) -> list[Any]:
    """Returns the callbacks of a run, in order.

    The run's hparams go to TensorBoard's HParams dashboard when training begins; penalty values
    and diagnostics come before TensorBoard (so it logs them), the divergence guard before the
    checkpoint (so a diverged epoch is not saved). The config's own callbacks (`callbacks.*`)
    come after the logging callbacks, so they see the penalties and diagnostics in the logs.
    """
    values = hparams.hydra_run_values(cfg)
    return [
        keras.callbacks.LambdaCallback(on_train_begin=lambda _: hparams.write_run(run_dir, values)),
        PenaltyMonitor(terms),
        *([WeightDiagnostics()] if cfg.trainer.diagnostics else []),
        RegfwTensorBoard(
            log_dir=str(run_dir),
            histogram_freq=1 if cfg.trainer.histograms else 0,
            write_graph=False,
            config_yaml=OmegaConf.to_yaml(cfg, resolve=True),
        ),
        guard,
        *(
            keras_object("callbacks", f"callbacks.{name}", node)
            for name, node in (cfg.get("callbacks") or {}).items()
        ),
        *(
            [Checkpoint(run_dir, guard, cfg.trainer.checkpoint_every)]
            if cfg.trainer.checkpoint_every
            else []
        ),
    ]
