"""Matrix helpers shared by the penalties.

The (-1, last_dim) view, smooth norms, Gram matrices and power iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

EPS = 1e-12  # keeps sqrt and divisions smooth and finite at all-zero weights


def as_matrix(w: Any) -> Any:
    """Reshapes a weight to (-1, last_dim): rows are inputs, columns are output units/filters."""
    return ops.reshape(w, (-1, w.shape[-1]))


def safe_norm(squares: Any) -> Any:
    """`sqrt(s)` with a finite gradient at 0, and exactly 0 there: `sqrt(s + eps) - sqrt(eps)`."""
    return ops.sqrt(squares + EPS) - math.sqrt(EPS)


def column_norms(w: Any) -> Any:
    """The L2 norm of each column of `as_matrix(w)` (one per output unit or filter), smooth at 0."""
    return safe_norm(ops.sum(ops.square(as_matrix(w)), axis=0))


def smaller_gram(w: Any) -> tuple[Any, int]:
    """Returns the smaller Gram matrix of W = `as_matrix(w)` (W^T W or W W^T) and `n - m`.

    `n - m` is the number of columns minus the number of rows when W is wide (else 0): the two Gram
    matrices share their non-zero eigenvalues and `||W^T W||_F = ||W W^T||_F`.
    """
    matrix = as_matrix(w)
    rows, cols = math.prod(w.shape[:-1]), w.shape[-1]
    if rows >= cols:
        return ops.matmul(ops.transpose(matrix), matrix), 0
    return ops.matmul(matrix, ops.transpose(matrix)), cols - rows


def top_singular_vector(apply: Callable[[Any], Any], size: int, iterations: int, dtype: str) -> Any:
    """Power iteration for the top eigenvector of a symmetric PSD operator, under stop-gradient.

    Starts from a fixed pseudo-random unit vector (same every call, no state) and normalizes
    without a fixed epsilon, so small singular values keep full precision and a zero operator
    gives a zero vector instead of NaN.

    Args:
        apply: The operator, mapping a (size, 1) column to a (size, 1) column.
        size: The operator's dimension.
        iterations: Number of power iterations.
        dtype: The computation dtype.
    """
    start = np.random.default_rng(0).standard_normal((size, 1))
    vector = ops.convert_to_tensor(start / np.linalg.norm(start), dtype=dtype)
    tiny = float(np.finfo(keras.backend.standardize_dtype(dtype)).tiny)
    for _ in range(iterations):
        vector = apply(vector)
        # Scale-free normalization: divide by the largest entry first, so tiny singular values
        # do not underflow; a zero vector stays zero.
        vector = vector / ops.maximum(ops.max(ops.abs(vector)), tiny)
        vector = vector / ops.maximum(ops.sqrt(ops.sum(ops.square(vector))), 1.0)
    return ops.stop_gradient(vector)
