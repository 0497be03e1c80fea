"""Helpers shared by the penalty test files: numpy references, conversions, seeds, differences.

The references are independent float64 NumPy formulas, written from the article (clip, l1,
orthogonal) and the docstrings, never with the code under test. `W` is the weight reshaped to
(-1, last_dim); its columns `W[:, j]` are the output units or filters.
"""

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


# Independent numpy references (float64).


def np_clip(w, lower=-1.0, upper=1.0):
    w = np.asarray(w, dtype=np.float64)
    return float(np.sum((w - np.clip(w, lower, upper)) ** 2))


def np_l1(w, alpha=0.1):
    return float(alpha * np.sum(np.abs(np.asarray(w, dtype=np.float64))))


def np_l2(w):
    return float(np.sum(np.asarray(w, dtype=np.float64) ** 2))


def np_orthogonal(w):
    w = np.asarray(w, dtype=np.float64)
    m = w.reshape(-1, w.shape[-1])
    # Direct n x n Gram matrix, whatever the aspect ratio (no small-Gram identity here).
    gram = m.T @ m
    return float(np.sum((gram - np.eye(m.shape[1])) ** 2))


ARTICLE_REF = {"clip": np_clip, "l1": np_l1, "l2": np_l2, "orthogonal": np_orthogonal}


def as_matrix(w):
    w = np.asarray(w, dtype=np.float64)
    return w.reshape(-1, w.shape[-1])


def np_elastic(w, l1=0.5, l2=0.5):
    w = np.asarray(w, dtype=np.float64)
    return float(l1 * np.sum(np.abs(w)) + l2 * np.sum(w**2))


def np_orthogonal_offdiag(w):
    m = as_matrix(w)
    gram = m.T @ m  # always the n x n Gram matrix of the columns
    return float(np.sum((gram * (1.0 - np.eye(gram.shape[0]))) ** 2))


def smaller_gram(w):
    m = as_matrix(w)
    return m @ m.T if m.shape[0] < m.shape[1] else m.T @ m


def np_srip(w, iterations=None):
    gram = smaller_gram(w)
    return float(np.linalg.norm(gram - np.eye(gram.shape[0]), 2))


def np_spectral(w, iterations=None):
    return float(np.linalg.norm(as_matrix(w), 2) ** 2)


def np_group_lasso(w):
    return float(np.sum(np.linalg.norm(as_matrix(w), axis=0)))


def np_hoyer(w):
    w = np.asarray(w, dtype=np.float64)
    return float(np.sum(np.abs(w)) / np.sqrt(np.sum(w**2)))


def np_max_norm(w, max_value=3.0):
    norms = np.linalg.norm(as_matrix(w), axis=0)
    return float(np.sum(np.maximum(norms - max_value, 0.0) ** 2))


def np_keras_l1(w, l1=0.01):
    return float(l1 * np.sum(np.abs(np.asarray(w, dtype=np.float64))))


def np_keras_l2(w, l2=0.01):
    return float(l2 * np.sum(np.asarray(w, dtype=np.float64) ** 2))


def np_keras_l1l2(w, l1=0.01, l2=0.01):
    return np_keras_l1(w, l1) + np_keras_l2(w, l2)


def np_keras_orthogonal(w, factor=0.01, mode="rows"):
    """`factor` times the mean over distinct pairs of |cosine| between rows (or columns) of W."""
    m = as_matrix(w)
    vectors = m if mode == "rows" else m.T
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = unit @ unit.T
    i, j = np.triu_indices(len(vectors), k=1)
    return float(factor * np.mean(np.abs(cosines[i, j])))


CATALOGUE_REF = {
    "elastic": np_elastic,
    "orthogonal_offdiag": np_orthogonal_offdiag,
    "srip": np_srip,
    "spectral": np_spectral,
    "group_lasso": np_group_lasso,
    "hoyer": np_hoyer,
    "max_norm": np_max_norm,
    "keras_l1": np_keras_l1,
    "keras_l2": np_keras_l2,
    "keras_l1l2": np_keras_l1l2,
    "keras_orthogonal": np_keras_orthogonal,
}


# Every penalty regfw ships, by name.
NP_REF = {**ARTICLE_REF, **CATALOGUE_REF}
