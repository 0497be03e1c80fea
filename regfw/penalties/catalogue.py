"""Penalties from the literature beyond the article's.

Elastic net, off-diagonal orthogonality, SRIP, spectral norm, group lasso, Hoyer, soft max-norm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from regfw.penalties.base import Penalty, as_float, check_iterations, check_number, register
from regfw.penalties.linalg import (
    EPS,
    as_matrix,
    column_norms,
    safe_norm,
    smaller_gram,
    start_block,
    subspace_iterate,
)


@register("elastic")
class ElasticNet(Penalty):
    """Elastic net: `l1 * sum(|w|) + l2 * sum(w^2)` (default scale 1e-4). Kinked at 0."""

    def __init__(self, scale: float = 1e-4, l1: float = 0.5, l2: float = 0.5) -> None:
        super().__init__(scale, l1=check_number("l1", l1, low=0), l2=check_number("l2", l2, low=0))

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


class PowerIterationPenalty(Penalty):
    """A penalty on a top singular value, by block power iteration with a persistent block.

    Attached to a model, each weight gets its own block of `BLOCK` vectors (a non-trainable model
    variable, saved with checkpoints). It starts exact (the top eigenvectors, from NumPy's
    eigendecomposition, when the penalty is attached); every step warm-starts `iterations` block
    iterations with a Rayleigh-Ritz step from the last step's block (`subspace_iterate`) and
    stores the result, as Keras's `SpectralNormalization` keeps its vector. The penalty uses the
    block's first vector, under stop-gradient: the gradient is the top singular pair's. Without
    a persistent block (a penalty called on its own) it iterates `START_ITERATIONS` times from a
    fixed start.
    """

    BLOCK = 4
    START_ITERATIONS = 100

    def __init__(self, scale: float, iterations: int = 1) -> None:
        super().__init__(scale, iterations=check_iterations(iterations))

    def operator(self, w: Any) -> tuple[Callable[[Any], Any], int]:
        """The symmetric PSD operator (`keras.ops`) whose top eigenvector is wanted, its size."""
        raise NotImplementedError

    def numpy_operator(self, w: np.ndarray) -> np.ndarray:
        """The same operator as a float64 NumPy matrix, for the block's exact start."""
        raise NotImplementedError

    def value_at(self, w: Any, vector: Any) -> Any:
        """The unscaled penalty of `w`, given the operator's top eigenvector, shape (size, 1)."""
        raise NotImplementedError

    def state_shape(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """The shape of the persistent block of a weight of `shape`: (size, min(BLOCK, size))."""
        size = min(math.prod(shape[:-1]), shape[-1])
        return size, min(self.BLOCK, size)

    def initial_state(self, w: np.ndarray) -> np.ndarray:
        """The exact top eigenvectors of a weight's operator, largest first, float64."""
        w = np.asarray(w, dtype=np.float64)
        _, vectors = np.linalg.eigh(self.numpy_operator(w))
        return vectors[:, ::-1][:, : self.state_shape(w.shape)[1]]

    def _estimate(self, w: Any, block: Any, iterations: int) -> tuple[Any, Any]:
        apply, _ = self.operator(w)
        block = subspace_iterate(apply, ops.cast(block, w.dtype), iterations)
        return self._scaled(self.value_at(w, block[:, :1])), block

    def value(self, w: Any) -> Any:
        size, width = self.state_shape(tuple(w.shape))
        start = ops.convert_to_tensor(start_block(size, width), dtype=w.dtype)
        apply, _ = self.operator(w)
        return self.value_at(w, subspace_iterate(apply, start, self.START_ITERATIONS)[:, :1])

    def step(self, w: Any, state: keras.Variable) -> Any:
        """The scaled penalty in a training step: iterates from `state` and stores the result."""
        value, block = self._estimate(as_float(w), state, self.params["iterations"])
        state.assign(ops.cast(block, state.dtype))
        return value

    def estimate(self, w: Any, state: keras.Variable) -> Any:
        """The scaled penalty for logging: the same iterations as `step`, nothing stored."""
        return self._estimate(as_float(w), state, self.params["iterations"])[0]


def _numpy_matrix(w: np.ndarray) -> np.ndarray:
    return w.reshape(-1, w.shape[-1])


@register("srip")
class SRIP(PowerIterationPenalty):
    """Spectral restricted isometry (Bansal, Chen & Wang 2018): `sigma_max(G - I)`.

    G is the smaller Gram matrix (W W^T or W^T W); `sigma_max` is `||(G - I) v||` with v the top
    eigenvector of `(G - I)^2`, from block power iteration with a persistent block (see
    `PowerIterationPenalty`; `iterations` per step, default 1). Default scale 0.01, the paper's
    starting value; pair it with a step schedule to turn it off later. Smooth almost everywhere;
    finite at all-zero weights.
    """

    def __init__(self, scale: float = 0.01, iterations: int = 1) -> None:
        super().__init__(scale, iterations)

    @staticmethod
    def _deviation(w: Any) -> Any:
        gram, _ = smaller_gram(w)
        return gram - ops.eye(gram.shape[0], dtype=gram.dtype)

    def operator(self, w: Any) -> tuple[Callable[[Any], Any], int]:
        deviation = self._deviation(w)
        return (lambda v: ops.matmul(deviation, ops.matmul(deviation, v))), deviation.shape[0]

    def numpy_operator(self, w: np.ndarray) -> np.ndarray:
        m = _numpy_matrix(w)
        deviation = (m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T) - np.eye(min(m.shape))
        return deviation @ deviation

    def value_at(self, w: Any, vector: Any) -> Any:
        return safe_norm(ops.sum(ops.square(ops.matmul(self._deviation(w), vector))))


@register("spectral")
class Spectral(PowerIterationPenalty):
    """Spectral norm regularization (Yoshida & Miyato 2017): `sigma_max(W)^2`.

    `sigma_max(W)^2` is `||W v||^2` with v the top eigenvector of the smaller of W^T W and
    W W^T, from block power iteration with a persistent block (see `PowerIterationPenalty`;
    `iterations` per step, default 1). Default scale 1e-3. Smooth almost everywhere.
    """

    def __init__(self, scale: float = 1e-3, iterations: int = 1) -> None:
        super().__init__(scale, iterations)

    @staticmethod
    def _tall(w: Any) -> Any:
        matrix = as_matrix(w)
        return ops.transpose(matrix) if matrix.shape[0] < matrix.shape[1] else matrix

    def operator(self, w: Any) -> tuple[Callable[[Any], Any], int]:
        matrix = self._tall(w)
        transposed = ops.transpose(matrix)
        return (lambda v: ops.matmul(transposed, ops.matmul(matrix, v))), matrix.shape[1]

    def numpy_operator(self, w: np.ndarray) -> np.ndarray:
        m = _numpy_matrix(w)
        m = m.T if m.shape[0] < m.shape[1] else m
        return m.T @ m

    def value_at(self, w: Any, vector: Any) -> Any:
        return ops.sum(ops.square(ops.matmul(self._tall(w), vector)))


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
        super().__init__(
            scale, max_value=check_number("max_value", max_value, low=0, low_open=True)
        )

    def value(self, w: Any) -> Any:
        return ops.sum(ops.square(ops.relu(column_norms(w) - self.params["max_value"])))
