"""Keras callbacks: penalty values per epoch, the epoch line, and TensorBoard with regfw's tags."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from keras import ops
from omegaconf import DictConfig

from regfw.build.attach import PenaltyTerm
from regfw.build.instantiate import keras_object
from regfw.config.compose import train_command
from regfw.config.effective import effective_yaml
from regfw.config.schedules import multiplier
from regfw.training import events, layout
from regfw.training.checkpoints import Checkpoint
from regfw.training.console import epoch_line, say
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


class EpochLine(keras.callbacks.Callback):
    """Says the epoch's line (`regfw.training.console.epoch_line`) at the end of every epoch.

    Args:
        epochs: The number of epochs of the run.
    """

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        say(epoch_line(epoch, self.epochs, logs or {}, time.perf_counter() - self.start))


class RegfwTensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback, plus regfw's tags, the config text and the layout.

    Keras's own metrics keep their `epoch_<name>` tags; regfw's keys (`data_loss`,
    `penalty/total`, `penalty/<term>`) are written under exactly those names, in `train/` or, for
    `val_` keys, in `validation/`. Keras's `evaluation_<metric>_vs_iterations` copies of the
    validation metrics are left out. When training begins the run folder gets the custom-scalars
    layout (`regfw.training.layout`) and `train/` the `config` text summary.

    Args:
        config_text: The effective config (and the command), written once as the `config` text.
        **kwargs: Passed to `keras.callbacks.TensorBoard`.
    """

    def __init__(self, config_text: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_text = config_text

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        events.write(self.log_dir, "layout", [layout.layout_summary()])
        if self.config_text:
            text = "\n".join("    " + line for line in self.config_text.splitlines())
            with self._train_writer.as_default():
                tf.summary.text("config", text, step=0)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Nothing: regfw logs per epoch (Keras would convert every batch's logs, ~2 ms)."""

    def on_test_end(self, logs: dict[str, Any] | None = None) -> None:
        self._pop_writer()  # Keras would also write evaluation_*_vs_iterations here

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Writes the epoch's scalars (and histograms) as Keras would, one summary per writer."""
        logs = logs or {}
        train = self._collect_learning_rate(
            {k: v for k, v in logs.items() if not k.startswith("val_")}
        )
        val = {k.removeprefix("val_"): v for k, v in logs.items() if k.startswith("val_")}
        for writer, items in ((self._train_writer, train), (self._val_writer, val)):
            if items:
                tags = {(k if is_own_key(k) else f"epoch_{k}"): v for k, v in items.items()}
                self._write(writer, events.scalars(tags), epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._log_weights(epoch)

    def _log_weights(self, epoch: int) -> None:
        """Each weight's histogram under Keras's tag (`<weight path>/histogram`)."""
        weights = {
            f"{weight.path.replace(':', '_')}/histogram": keras.ops.convert_to_numpy(weight)
            for layer in self.model.layers
            for weight in layer.weights
        }
        self._write(self._train_writer, events.histograms(weights), epoch)

    @staticmethod
    def _write(writer: Any, summary: Any, step: int) -> None:
        with writer.as_default():
            tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
        writer.flush()


def make_callbacks(
    cfg: DictConfig, run_dir: Path, terms: list[PenaltyTerm], guard: DivergenceGuard
) -> list[Any]:
    """Returns the callbacks of a run, in order.

    Penalty values and diagnostics come before the epoch line and TensorBoard (so they show
    them), the divergence guard before the checkpoint (so a diverged epoch is not saved).
    The config's own callbacks (`callbacks.*`) come after the logging callbacks, so they see the
    penalties and diagnostics in the logs.
    """
    return [
        PenaltyMonitor(terms),
        *([WeightDiagnostics()] if cfg.trainer.diagnostics else []),
        *([EpochLine(cfg.trainer.epochs)] if cfg.trainer.verbose else []),
        RegfwTensorBoard(
            log_dir=str(run_dir),
            histogram_freq=1 if cfg.trainer.histograms else 0,
            write_graph=False,
            config_text=_command() + effective_yaml(cfg),
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


def _command() -> str:
    """`# python train.py <overrides>` and a newline, for the current Hydra job (else nothing)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return ""
    return f"# {train_command(HydraConfig.get().overrides.task)}\n"
