"""Helpers shared by the penalty test files: conversions, seeds, finite differences."""

from __future__ import annotations

import zlib

import keras
import numpy as np


def dtype_of(x):
    return keras.backend.standardize_dtype(x.dtype)


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def stable_seed(*parts):
    """A seed that does not depend on PYTHONHASHSEED."""
    return zlib.crc32(repr(parts).encode())


def away_from(w, points, margin=0.05):
    """Moves entries within `margin` of any of `points` to `margin` + 0.05 beyond it."""
    w = np.array(w, dtype=np.float64)
    for p in points:
        near = np.abs(w - p) < margin
        w[near] = p + np.where(w[near] >= p, 1.0, -1.0) * (margin + 0.05)
    return w


def numeric_gradient(f, w, eps=1e-6):
    grad = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        plus, minus = w.copy(), w.copy()
        plus[idx] += eps
        minus[idx] -= eps
        grad[idx] = (f(plus) - f(minus)) / (2 * eps)
    return grad
