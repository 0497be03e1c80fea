"""Matrix helpers shared by the penalties.

The (-1, last_dim) view, smooth norms, Gram matrices and power iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

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


def start_block(size: int, width: int) -> np.ndarray:
    """A fixed pseudo-random orthonormal (size, width) block: the start without a stored block."""
    start = np.random.default_rng(0).standard_normal((size, width))
    return np.linalg.qr(start)[0]


def subspace_iterate(apply: Callable[[Any], Any], block: Any, iterations: int) -> Any:
    """Block power iteration with a Rayleigh-Ritz step, under stop-gradient.

    `iterations` times, the block becomes the orthonormal basis (QR) of the operator applied to
    it; then it is rotated within its span onto the Ritz vectors of the operator, largest first,
    so column 0 is the best estimate of the top eigenvector. Iterating a few vectors at once is
    what makes a warm-started estimate follow the top eigenvector when the top eigenvalues are
    close (one vector converges at `(lambda_2 / lambda_1)^k`, a block of `b` at
    `(lambda_(b+1) / lambda_1)^k`, and the Ritz value is exact within the block). Where the
    operator maps the block to zero (all-zero weights) the block is kept.

    Args:
        apply: The symmetric PSD operator, mapping a (size, b) block to a (size, b) block.
        block: The (size, b) orthonormal start: the last step's block, or `start_block`.
        iterations: Number of iterations before the Rayleigh-Ritz step.
    """
    for _ in range(iterations):
        product = apply(block)
        basis, _ = ops.qr(product)
        block = ops.where(ops.max(ops.abs(product)) > 0, basis, block)
    ritz = ops.matmul(ops.transpose(block), apply(block))
    _, vectors = ops.eigh((ritz + ops.transpose(ritz)) / 2)  # ascending eigenvalues
    return ops.stop_gradient(ops.matmul(block, ops.flip(vectors, axis=1)))
