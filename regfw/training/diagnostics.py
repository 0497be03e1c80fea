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

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

NEAR_ZERO = 1e-3


def weight_diagnostics(w: np.ndarray) -> dict[str, float]:
    """Returns the diagnostics of one weight (see the module docstring)."""
    w = np.asarray(w, dtype=np.float64).reshape(-1, w.shape[-1])
    if not np.all(np.isfinite(w)):  # a diverged run: nothing to decompose
        return {
            k: math.nan for k in ("near_zero", "orthogonality", "spectral_norm", "frobenius_norm")
        }
    gram = w.T @ w if w.shape[1] <= w.shape[0] else w @ w.T
    p = gram.shape[0]
    values = {
        "near_zero": np.mean(np.abs(w) < NEAR_ZERO),
        "orthogonality": np.linalg.norm(gram - np.eye(p)) / np.sqrt(p),
        "spectral_norm": np.sqrt(max(np.linalg.eigvalsh(gram)[-1], 0.0)),
        "frobenius_norm": np.sqrt(np.trace(gram)),
    }
    with np.errstate(over="ignore"):  # TensorBoard stores float32: a diverging run logs inf
        return {k: float(np.float32(v)) for k, v in values.items()}


def model_diagnostics(
    weights: dict[str, np.ndarray], logs: dict[str, Any] | None = None
) -> dict[str, float]:
    """Returns `diagnostics/...` values for named weights and, given epoch logs, the loss ratio."""
    values, sizes, near_zero, orthogonality = {}, [], [], []
    for path, w in weights.items():
        if np.ndim(w) < 2:
            continue
        stats = weight_diagnostics(w)
        values.update({f"diagnostics/{path}/{k}": v for k, v in stats.items()})
        sizes.append(np.size(w))
        near_zero.append(stats["near_zero"])
        orthogonality.append(stats["orthogonality"])
    if sizes:
        values["diagnostics/near_zero"] = float(np.average(near_zero, weights=sizes))
        values["diagnostics/orthogonality"] = float(np.mean(orthogonality))
    if logs and "penalty/total" in logs and logs.get("data_loss"):
        values["diagnostics/penalty_to_data_loss"] = float(
            logs["penalty/total"] / logs["data_loss"]
        )
    return values


class WeightDiagnostics(keras.callbacks.Callback):
    """Adds the diagnostics to the epoch logs (after the penalty values, for the loss ratio).

    Args:
        state: Returns the training state as host arrays, by `model/<path>` (default: the
            model's variables); a stacked job's come from its stack.
    """

    def __init__(self, state: Callable[[], dict[str, np.ndarray]] | None = None) -> None:
        super().__init__()
        self.state = state

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            variables = self.model.trainable_variables
            if self.state is None:
                weights = {v.path: v.numpy() for v in variables}
            else:
                state = self.state()
                weights = {v.path: state[f"model/{v.path}"] for v in variables}
            logs.update(model_diagnostics(weights, logs))
