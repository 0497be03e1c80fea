"""Stops training at the first batch whose loss is not finite, and says which part went bad.

Attribution: if the data loss went non-finite, the data loss is to blame. Otherwise a penalty did:
its non-finite gradient has just been applied to the weights it touches, so the terms whose
weights (or values) are now non-finite are named, with those weights.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras import ops

from regfw.build.attach import PenaltyTerm


def _finite(value: Any) -> bool:
    return value is None or math.isfinite(float(value))


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training when the loss becomes NaN or infinite; `reason` then says why.

    Args:
        terms: The model's penalty terms.
    """

    def __init__(self, terms: list[PenaltyTerm]) -> None:
        super().__init__()
        self.terms = terms
        self.reason: str | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        if _finite(logs.get("loss")) or self.reason:
            return
        where = f"epoch {self.epoch + 1}, batch {batch + 1}"
        self.reason = f"loss became non-finite at {where}: {self.attribute(logs)}"
        self.model.stop_training = True

    def attribute(self, logs: dict[str, Any]) -> str:
        """Names the part of the loss that went non-finite first."""
        if not _finite(logs.get("data_loss")):
            return "the data loss went non-finite (penalties were finite)"
        if hasattr(self.model, "jax_state_sync"):  # JAX keeps the weights apart mid-epoch
            self.model.jax_state_sync()
        blamed = []
        for term in self.terms:
            bad = [
                v.path
                for v in term.variables
                if not np.all(np.isfinite(ops.convert_to_numpy(v)))
                or not np.isfinite(ops.convert_to_numpy(term.value_of(v)))
            ]
            if bad:
                blamed.append(f"penalty term '{term.name}' on {', '.join(bad)}")
        if not blamed:
            return "the data loss was finite; no penalty term is non-finite on the current weights"
        return "the data loss was finite; " + "; ".join(blamed)
