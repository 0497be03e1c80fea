"""Keras callbacks: penalty values per epoch, the epoch line, and TensorBoard with regfw's tags."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
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
    return penalty_logs(
        terms, [[ops.convert_to_numpy(t.value_of(v)) for v in t.variables] for t in terms]
    )


def penalty_logs(terms: list[PenaltyTerm], values: list[list[Any]]) -> dict[str, float]:
    """`penalty/<term>` (the sum of its values) and `penalty/total`, from each term's values.

    Args:
        terms: The model's penalty terms.
        values: Each term's scaled value on each of its weights (scalars, in `t.variables` order).
    """
    logs = {f"penalty/{t.name}": float(sum(v)) for t, v in zip(terms, values, strict=True)}
    logs["penalty/total"] = float(sum(logs.values()))
    return logs


class PenaltyMonitor(keras.callbacks.Callback):
    """Schedules each term's scale per epoch and logs penalty values and scales.

    At the start of an epoch it sets each scheduled term's scale; at the end it adds
    `penalty/<term>`, `penalty/total` and `penalty_scale/<term>` to the epoch logs, for History,
    TensorBoard and metrics.json. Scales are assigned to the penalties' `keras.Variable`s, so the
    compiled train step is not retraced.

    Args:
        terms: The model's penalty terms.
        values: Returns the `penalty/...` values of the current epoch (default:
            `penalty_values(terms)` on the model's weights); a stacked job's come from its stack.
        scales: Returns each term's current scale by term name (default: its penalty's scale
            variable); a stacked job's come from its stack.
    """

    def __init__(
        self,
        terms: list[PenaltyTerm],
        values: Callable[[], dict[str, float]] | None = None,
        scales: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        super().__init__()
        self.terms = terms
        self.values = values or (lambda: penalty_values(terms))
        self.scales = scales or (lambda: {t.name: t.penalty.scale for t in terms})

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        for term in self.terms:
            if term.schedule and term.schedule.get("name", "constant") != "constant":
                term.penalty.set_scale(term.base_scale * multiplier(term.schedule, epoch))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs.update(self.values())
            logs.update({f"penalty_scale/{name}": v for name, v in self.scales().items()})


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


class RegfwTensorBoard(keras.callbacks.Callback):
    """TensorBoard logging as Keras's callback does it per epoch, plus regfw's tags and layout.

    Keras's own metrics keep the tags Keras's `TensorBoard` callback gives them (`epoch_<name>`,
    the learning rate as `epoch_learning_rate`, each weight's `<weight path>/histogram`); regfw's
    keys (`data_loss`, `penalty/total`, `penalty/<term>`) are written under exactly those names,
    in `train/` or, for `val_` keys, in `validation/`. When training begins the run folder gets
    the custom-scalars layout (`regfw.training.layout`) and `train/` the `config` text summary.
    Each epoch is one summary per writer (`regfw.training.events`), without TensorFlow.

    Args:
        log_dir: The run folder.
        histogram_freq: Writes the weights' histograms every this many epochs (0: never).
        config_text: The effective config (and the command), written once as the `config` text.
        histograms: Returns the epoch's histogram buckets by weight path
            (`events.histogram_buckets`; default: computed from the model's weights); a stacked
            job's come from its stack.
        learning_rates: Returns the learning rate(s) as `_learning_rates` logs them (default:
            read from the model's optimizer); a stacked job's come from its stack.
    """

    def __init__(
        self,
        log_dir: str | Path,
        histogram_freq: int = 0,
        config_text: str = "",
        histograms: Callable[[], dict[str, np.ndarray]] | None = None,
        learning_rates: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        super().__init__()
        self.log_dir = Path(log_dir)
        self.histogram_freq = histogram_freq
        self.config_text = config_text
        self.histograms = histograms
        self.learning_rates = learning_rates or self._learning_rates
        self.writers = {split: events.EventWriter(self.log_dir / split)
                        for split in ("train", "validation")}  # fmt: skip

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)  # as Keras's callback makes it
        events.write(self.log_dir, "layout", [layout.layout_summary()])
        if self.config_text:
            text = "\n".join("    " + line for line in self.config_text.splitlines())
            self.writers["train"].write(events.text("config", text), step=0)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Writes the epoch's scalars (and histograms) as Keras would, one summary per writer."""
        logs = logs or {}
        train = {k: v for k, v in logs.items() if not k.startswith("val_")}
        train.update(self.learning_rates())
        val = {k.removeprefix("val_"): v for k, v in logs.items() if k.startswith("val_")}
        for split, items in (("train", train), ("validation", val)):
            if items:
                tags = {(k if is_own_key(k) else f"epoch_{k}"): v for k, v in items.items()}
                self.writers[split].write(events.scalars(tags), step=epoch)
        if self.histogram_freq and epoch % self.histogram_freq == 0:
            self._log_weights(epoch)

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        for writer in self.writers.values():
            writer.close()

    def _learning_rates(self) -> dict[str, float]:
        """The optimizer's learning rate(s), as Keras's callback logs them."""
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's
        if hasattr(optimizer, "optimizers"):
            return {f"learning_rate_{o.name}": float(ops.convert_to_numpy(o.learning_rate))
                    for o in optimizer.optimizers}  # fmt: skip
        if isinstance(optimizer, keras.optimizers.Optimizer):
            return {"learning_rate": float(ops.convert_to_numpy(optimizer.learning_rate))}
        return {}

    def _log_weights(self, epoch: int) -> None:
        """Each weight's histogram under Keras's tag (`<weight path>/histogram`)."""
        weights = [weight for layer in self.model.layers for weight in layer.weights]
        if self.histograms:
            by_path = self.histograms()
        else:
            by_path = {w.path: events.histogram_buckets(ops.convert_to_numpy(w)) for w in weights}
        buckets = {f"{w.path.replace(':', '_')}/histogram": by_path[w.path] for w in weights}
        self.writers["train"].write(events.histogram_summary(buckets), step=epoch)


@dataclasses.dataclass
class Sources:
    """Where a run's callbacks get what they log, in place of the model (a stacked job's stack).

    Each is None for a run alone: the callback computes it from the model.

    Attributes:
        penalty_values: The epoch's `penalty/...` values (`PenaltyMonitor`).
        penalty_scales: Each term's scale this epoch, by term name (`PenaltyMonitor`).
        learning_rates: The learning rate(s) as TensorBoard logs them (`RegfwTensorBoard`).
        diagnostics: The epoch's weight diagnostics, without the loss ratio
            (`WeightDiagnostics`).
        histograms: The epoch's histogram buckets by weight path (`RegfwTensorBoard`).
        state: The training state as host arrays, by `training_state`'s keys (`Checkpoint`).
        checkpoint_writer: Writes checkpoints in the background (`Checkpoint`).
    """

    penalty_values: Callable[[], dict[str, float]] | None = None
    penalty_scales: Callable[[], dict[str, float]] | None = None
    learning_rates: Callable[[], dict[str, float]] | None = None
    diagnostics: Callable[[], dict[str, float]] | None = None
    histograms: Callable[[], dict[str, np.ndarray]] | None = None
    state: Callable[[], dict[str, np.ndarray]] | None = None
    checkpoint_writer: concurrent.futures.Executor | None = None


def make_callbacks(
    cfg: DictConfig,
    run_dir: Path,
    terms: list[PenaltyTerm],
    guard: DivergenceGuard,
    sources: Sources | None = None,
) -> list[Any]:
    """Returns the callbacks of a run, in order.

    Penalty values and diagnostics come before the epoch line and TensorBoard (so they show
    them), the divergence guard before the checkpoint (so a diverged epoch is not saved).
    The config's own callbacks (`callbacks.*`) come after the logging callbacks, so they see the
    penalties and diagnostics in the logs. `sources` (default: none) go to the callbacks that
    log them.
    """
    sources = sources or Sources()
    return [
        PenaltyMonitor(terms, sources.penalty_values, sources.penalty_scales),
        *([WeightDiagnostics(sources.diagnostics)] if cfg.trainer.diagnostics else []),
        *([EpochLine(cfg.trainer.epochs)] if cfg.trainer.verbose else []),
        RegfwTensorBoard(
            run_dir,
            histogram_freq=1 if cfg.trainer.histograms else 0,
            config_text=_command() + effective_yaml(cfg),
            histograms=sources.histograms,
            learning_rates=sources.learning_rates,
        ),
        guard,
        *(
            keras_object("callbacks", f"callbacks.{name}", node)
            for name, node in (cfg.get("callbacks") or {}).items()
        ),
        *(
            [
                Checkpoint(
                    run_dir,
                    guard,
                    cfg.trainer.checkpoint_every,
                    sources.checkpoint_writer,
                    sources.state,
                )
            ]
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
