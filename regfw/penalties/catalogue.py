"""Penalties from the literature beyond the article's.

Elastic net, off-diagonal orthogonality, SRIP, spectral norm, group lasso, Hoyer, soft max-norm.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from regfw.penalties.base import Penalty, check_iterations, register
from regfw.penalties.linalg import (
    EPS,
    as_matrix,
    column_norms,
    safe_norm,
    smaller_gram,
    top_singular_vector,
)


@register("elastic")
class ElasticNet(Penalty):
    """Elastic net: `l1 * sum(|w|) + l2 * sum(w^2)` (default scale 1e-4). Kinked at 0."""

    def __init__(self, scale: float = 1e-4, l1: float = 0.5, l2: float = 0.5) -> None:
        super().__init__(scale, l1=float(l1), l2=float(l2))

    def value(self, w: Any) -> Any:
        return self.params["l1"] * ops.sum(ops.abs(w)) + self.params["l2"] * ops.sum(ops.square(w))


@register("orthogonal_offdiag")
class OrthogonalOffDiagonal(Penalty):
    """Off-diagonal orthogonality (BigGAN style): `||(W^T W) * (1 - I)||_F^2`.

    Penalizes correlations between columns but not their norms (default scale 1e-4). Always uses
    the (n, n) Gram matrix: the small-Gram shortcut `||W W^T||_F^2 - sum_j ||W[:, j]||^4`
    cancels catastrophically in float32 when column norms differ a lot. Smooth everywhere.
    """

    def __init__(self, scale: float = 1e-4) -> None:
        super().__init__(scale)

    def value(self, w: Any) -> Any:
        matrix = as_matrix(w)
        gram = ops.matmul(ops.transpose(matrix), matrix)
        return ops.sum(ops.square(gram * (1 - ops.eye(gram.shape[0], dtype=gram.dtype))))


@register("srip")
class SRIP(Penalty):
    """Spectral restricted isometry (Bansal, Chen & Wang 2018): `sigma_max(G - I)`.

    G is the smaller Gram matrix (W W^T or W^T W). `sigma_max` comes from `iterations` power
    iterations on `(G - I)^2` with the vector under stop-gradient, then `||(G - I) v||` (default
    scale 0.01, the paper's starting value; pair it with a step schedule to turn it off later).
    Smooth almost everywhere; finite at all-zero weights.
    """

    def __init__(self, scale: float = 0.01, iterations: int = 10) -> None:
        super().__init__(scale, iterations=check_iterations(iterations))

    def value(self, w: Any) -> Any:
        gram, _ = smaller_gram(w)
        deviation = gram - ops.eye(gram.shape[0], dtype=gram.dtype)
        vector = top_singular_vector(
            lambda v: ops.matmul(deviation, ops.matmul(deviation, v)),
            gram.shape[0],
            self.params["iterations"],
            gram.dtype,
        )
        return safe_norm(ops.sum(ops.square(ops.matmul(deviation, vector))))


@register("spectral")
class Spectral(Penalty):
    """Spectral norm regularization (Yoshida & Miyato 2017): `sigma_max(W)^2`.

    `sigma_max` comes from `iterations` power iterations on the smaller of W^T W and W W^T with the
    vector under stop-gradient, then `||W v||^2` (default scale 1e-3). Smooth almost everywhere.
    """

    def __init__(self, scale: float = 1e-3, iterations: int = 10) -> None:
        super().__init__(scale, iterations=check_iterations(iterations))

    def value(self, w: Any) -> Any:
        matrix = as_matrix(w)
        if matrix.shape[0] < matrix.shape[1]:
            matrix = ops.transpose(matrix)
        vector = top_singular_vector(
            lambda v: ops.matmul(ops.transpose(matrix), ops.matmul(matrix, v)),
            matrix.shape[1],
            self.params["iterations"],
            matrix.dtype,
        )
        return ops.sum(ops.square(ops.matmul(matrix, vector)))


@register("group_lasso")
class GroupLasso(Penalty):
    """Group lasso over columns (structured sparsity, Wen et al. 2016): `sum_j ||W[:, j]||_2`.

    Drives whole output units or conv filters to zero (default scale 1e-3). The norm is
    `sqrt(s + eps) - sqrt(eps)`, so value and gradient are finite (and 0) at zero columns.
    """

    def __init__(self, scale: float = 1e-3) -> None:
        super().__init__(scale)

    def value(self, w: Any) -> Any:
        return ops.sum(column_norms(w))


@register("hoyer")
class Hoyer(Penalty):
    """Hoyer sparsity: `sum(|w|) / ||w||_2`, scale-invariant (default scale 1e-3).

    The denominator is `sqrt(sum(w^2) + eps)`, so all-zero weights give 0 with a finite gradient.
    """

    def __init__(self, scale: float = 1e-3) -> None:
        super().__init__(scale)

    def value(self, w: Any) -> Any:
        return ops.sum(ops.abs(w)) / ops.sqrt(ops.sum(ops.square(w)) + EPS)


@register("max_norm")
class SoftMaxNorm(Penalty):
    """Soft max-norm: `sum_j relu(||W[:, j]||_2 - max_value)^2` (default scale 0.01, max 3).

    Zero while every column norm is within `max_value`; smooth everywhere.
    """

    def __init__(self, scale: float = 0.01, max_value: float = 3.0) -> None:
        super().__init__(scale, max_value=float(max_value))

    def value(self, w: Any) -> Any:
        return ops.sum(ops.square(ops.relu(column_norms(w) - self.params["max_value"])))
