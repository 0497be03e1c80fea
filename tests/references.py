"""Independent references for what a run reports: losses, metrics, class weights, diagnostics.

Written from the documented formulas (README, Keras's loss definitions) in float64 NumPy and
scikit-learn, never with regfw's code. The inputs are what a run leaves on disk (the trained
weights in `model.keras`) or what plain Keras computes from them (predictions).
"""

from __future__ import annotations

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

EPSILON = 1e-7  # Keras clips probabilities to [eps, 1 - eps] before taking logs


def data_loss(y: np.ndarray, predictions: np.ndarray, num_classes: int, weights=None) -> float:
    """The mean loss Keras compiles for `num_classes` (0: mse, 2: binary, else sparse CE).

    With `weights` (one per sample) it is `sum(weight * loss) / n`, as Keras reduces a weighted
    batch.
    """
    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if num_classes == 0:
        per_sample = np.mean((p - y.reshape(p.shape)) ** 2, axis=-1)
    elif num_classes == 2:
        q, t = np.clip(p.ravel(), EPSILON, 1 - EPSILON), y.ravel()
        per_sample = -(t * np.log(q) + (1 - t) * np.log(1 - q))
    else:
        p = p / p.sum(axis=-1, keepdims=True)
        chosen = p[np.arange(len(p)), y.ravel().astype(int)]
        per_sample = -np.log(np.clip(chosen, EPSILON, 1 - EPSILON))
    weights = np.ones(len(per_sample)) if weights is None else np.asarray(weights, np.float64)
    return float(np.sum(weights * per_sample) / len(per_sample))


def second_metric(y: np.ndarray, predictions: np.ndarray, num_classes: int) -> float:
    """Accuracy (classification: threshold 0.5 or argmax) or mean absolute error (regression)."""
    p = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if num_classes == 0:
        return float(np.mean(np.abs(p - y.reshape(p.shape))))
    if num_classes == 2:
        return float(np.mean((p.ravel() > 0.5) == (y.ravel() > 0.5)))
    return float(np.mean(np.argmax(p, axis=-1) == y.ravel()))


def balanced_class_weights(labels: np.ndarray) -> dict[int, float]:
    """scikit-learn's `balanced` class weights: n_samples / (n_classes * count), per class."""
    labels = np.asarray(labels).ravel().astype(int)
    classes = np.unique(labels)
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights, strict=True)}


def as_matrix(w: np.ndarray) -> np.ndarray:
    """A weight as the README's `W`: reshaped to (-1, last_dim), float64."""
    w = np.asarray(w, dtype=np.float64)
    return w.reshape(-1, w.shape[-1])


def orthogonal(w: np.ndarray) -> float:
    """The article's `||W^T W - I||_F^2`, on the full (n, n) Gram matrix."""
    m = as_matrix(w)
    return float(np.sum((m.T @ m - np.eye(m.shape[1])) ** 2))


def weight_diagnostics(w: np.ndarray) -> dict[str, float]:
    """The README's per-weight diagnostics of one weight with two or more dimensions."""
    m = as_matrix(w)
    p = min(m.shape)
    gram = m.T @ m if m.shape[1] <= m.shape[0] else m @ m.T
    return {
        "near_zero": float(np.mean(np.abs(m) < 1e-3)),
        "orthogonality": float(np.linalg.norm(gram - np.eye(p), "fro") / np.sqrt(p)),
        "spectral_norm": float(np.linalg.svd(m, compute_uv=False)[0]),
        "frobenius_norm": float(np.linalg.norm(m, "fro")),
    }
