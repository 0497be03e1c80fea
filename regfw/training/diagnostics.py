"""Per-layer weight diagnostics, logged every epoch as `diagnostics/<weight path>/<name>`.

For every trainable weight with at least two dimensions, reshaped to `W` of shape `(m, n)`
(a conv kernel `(kh, kw, cin, cout)` becomes `(kh*kw*cin, cout)`), with `G` the smaller Gram
matrix (`W^T W` if `n <= m`, else `W W^T`) of size `p = min(m, n)`:

- `near_zero`: the fraction of entries with `|w| < 1e-3` (sparsity);
- `orthogonality`: `||G - I_p||_F / sqrt(p)` (0 for orthonormal columns or rows);
- `spectral_norm`: the largest singular value, `sqrt(max eigenvalue of G)`;
- `frobenius_norm`: `||W||_F`.

Model-wide: `diagnostics/near_zero` (over all those entries), `diagnostics/orthogonality` (mean
over the weights) and `diagnostics/penalty_to_data_loss` (`penalty/total / data_loss`, training).
All of it is NumPy on the weights once per epoch, never inside the train step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

NEAR_ZERO = 1e-3


KEYS = ("near_zero", "orthogonality", "spectral_norm", "frobenius_norm")


def weight_diagnostics(w: np.ndarray) -> dict[str, float]:
    """Returns the diagnostics of one weight (see the module docstring)."""
    return {k: float(v[0]) for k, v in stacked_weight_diagnostics(np.asarray(w)[None]).items()}


def stacked_weight_diagnostics(w: np.ndarray) -> dict[str, np.ndarray]:
    """The diagnostics of a stack of weights `(jobs, *shape)`: each a float32 array `(jobs,)`.

    Job `j`'s numbers are `weight_diagnostics(w[j])`'s: one NumPy computation for every job of a
    stacked sweep (batched products and eigenvalues), in place of one per job.
    """
    w = np.asarray(w, dtype=np.float64)
    w = w.reshape(len(w), -1, w.shape[-1])
    finite = np.isfinite(w).all(axis=(1, 2))  # a diverged job: nothing to decompose
    w = np.where(finite[:, None, None], w, 0.0)
    gram = np.swapaxes(w, 1, 2) @ w if w.shape[2] <= w.shape[1] else w @ np.swapaxes(w, 1, 2)
    p = gram.shape[1]
    values = {
        "near_zero": np.mean(np.abs(w) < NEAR_ZERO, axis=(1, 2)),
        "orthogonality": np.linalg.norm(gram - np.eye(p), axis=(1, 2)) / np.sqrt(p),
        "spectral_norm": np.sqrt(np.maximum(np.linalg.eigvalsh(gram)[:, -1], 0.0)),
        "frobenius_norm": np.sqrt(np.trace(gram, axis1=1, axis2=2)),
    }
    with np.errstate(over="ignore"):  # TensorBoard stores float32: a diverging run logs inf
        return {k: np.where(finite, v, np.nan).astype(np.float32) for k, v in values.items()}


def model_diagnostics(
    weights: dict[str, np.ndarray], logs: dict[str, Any] | None = None
) -> dict[str, float]:
    """Returns `diagnostics/...` values for named weights and, given epoch logs, the loss ratio."""
    stacked = {path: np.asarray(w)[None] for path, w in weights.items()}
    values = stacked_model_diagnostics(stacked)[0] if stacked else {}
    return {**values, **loss_ratio(logs)}


def loss_ratio(logs: dict[str, Any] | None) -> dict[str, float]:
    """`diagnostics/penalty_to_data_loss` from an epoch's logs (nothing without those values)."""
    if logs and "penalty/total" in logs and logs.get("data_loss"):
        return {
            "diagnostics/penalty_to_data_loss": float(logs["penalty/total"] / logs["data_loss"])
        }
    return {}


def stacked_model_diagnostics(weights: dict[str, np.ndarray]) -> list[dict[str, float]]:
    """`model_diagnostics` (no loss ratio) of each job of a stack of `(jobs, ...)` weights."""
    jobs = len(next(iter(weights.values()))) if weights else 0
    values: list[dict[str, float]] = [{} for _ in range(jobs)]
    sizes, near_zero, orthogonality = [], [], []
    for path, w in weights.items():
        if np.ndim(w) < 3:
            continue
        stats = stacked_weight_diagnostics(w)
        for job in range(jobs):
            values[job].update({f"diagnostics/{path}/{k}": float(v[job]) for k, v in stats.items()})
        sizes.append(np.size(w[0]))
        near_zero.append(stats["near_zero"].astype(np.float64))
        orthogonality.append(stats["orthogonality"].astype(np.float64))
    if sizes:
        for job in range(jobs):
            column = [float(z[job]) for z in near_zero]
            values[job]["diagnostics/near_zero"] = float(np.average(column, weights=sizes))
            values[job]["diagnostics/orthogonality"] = float(
                np.mean([float(o[job]) for o in orthogonality])
            )
    return values


class WeightDiagnostics(keras.callbacks.Callback):
    """Adds the diagnostics to the epoch logs (after the penalty values, for the loss ratio).

    Args:
        values: Returns the epoch's weight diagnostics without the loss ratio (default:
            `model_diagnostics` of the model's trainable weights); a stacked job's come from its
            stack (`stacked_model_diagnostics`).
    """

    def __init__(self, values: Callable[[], dict[str, float]] | None = None) -> None:
        super().__init__()
        self.values = values

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is None:
            return
        if self.values is None:
            weights = {v.path: v.numpy() for v in self.model.trainable_variables}
            logs.update(model_diagnostics(weights, logs))
            return
        logs.update(self.values())
        logs.update(loss_ratio(logs))
