"""The article's three penalties (clip deviation, L1 sparsity, orthogonality), and L2."""

from __future__ import annotations

from typing import Any

from keras import ops

from regfw.penalties.base import Penalty, check_number, register
from regfw.penalties.linalg import smaller_gram


@register("clip")
class ClipDeviation(Penalty):
    """Squared deviation from a clipping range: `sum((w - clip(w, lower, upper))^2)`.

    The article's example 1 (default scale 0.01, bounds -1 and 1). Smooth everywhere.
    """

    def __init__(self, scale: float = 0.01, lower: float = -1.0, upper: float = 1.0) -> None:
        lower, upper = check_number("lower", lower), check_number("upper", upper)
        if lower > upper:
            raise ValueError(f"clip needs lower <= upper, got lower={lower}, upper={upper}")
        super().__init__(scale, lower=lower, upper=upper)

    def value(self, w: Any) -> Any:
        clipped = ops.clip(w, self.params["lower"], self.params["upper"])
        return ops.sum(ops.square(w - clipped))


@register("l1")
class L1(Penalty):
    """Sparsity: `alpha * sum(|w|)`.

    The article's example 2 (default alpha 0.1, scale 0.001). Kinked at 0 (subgradient 0 there).
    """

    def __init__(self, scale: float = 0.001, alpha: float = 0.1) -> None:
        super().__init__(scale, alpha=check_number("alpha", alpha, low=0))

    def value(self, w: Any) -> Any:
        return self.params["alpha"] * ops.sum(ops.abs(w))


@register("l2")
class L2(Penalty):
    """Squared magnitude: `sum(w^2)` (default scale 1e-4). Smooth everywhere."""

    def __init__(self, scale: float = 1e-4) -> None:
        super().__init__(scale)

    def value(self, w: Any) -> Any:
        return ops.sum(ops.square(w))


@register("orthogonal")
class Orthogonal(Penalty):
    """Deviation from orthonormal columns: `||W^T W - I||_F^2`, W = w reshaped to (-1, last_dim).

    The article's example 3 (default scale 1e-4). For a wide W of shape (m, n), m < n, it is
    computed on the smaller Gram matrix with the identity
    `||W^T W - I_n||^2 = ||W W^T - I_m||^2 + (n - m)` (same value, same gradient, O(m n min(m, n))
    work). Smooth everywhere.
    """

    def __init__(self, scale: float = 1e-4) -> None:
        super().__init__(scale)

    def value(self, w: Any) -> Any:
        gram, offset = smaller_gram(w)
        deviation = gram - ops.eye(gram.shape[0], dtype=gram.dtype)
        return ops.sum(ops.square(deviation)) + ops.cast(offset, gram.dtype)
