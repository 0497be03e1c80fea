"""Keras's own regularizers under regfw names (`keras_l1`, ...), for comparison."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from regfw.penalties.base import KeywordPenalty, register
from regfw.penalties.linalg import as_matrix


def _keras_penalty(
    name: str,
    factory: Callable[..., Any],
    doc: str,
    unsupported: Callable[[tuple[int, ...], dict[str, Any]], str | None] | None = None,
    **defaults: Any,
) -> None:
    """Registers one of Keras's own regularizers under `name`, as a Penalty with `scale` 1.

    Args:
        name: The regfw name.
        factory: The Keras regularizer class.
        doc: The docstring (with the formula).
        unsupported: Says why the regularizer is undefined on a weight shape (given the params).
        **defaults: The regularizer's parameters and their defaults.
    """

    class KerasPenalty(KeywordPenalty):
        def __init__(self, scale: float = 1.0, **params: Any) -> None:
            super().__init__(scale, **params)
            self.regularizer = factory(**self.params)

        def value(self, w: Any) -> Any:
            w = ops.cast(w, "float32")  # Keras's regularizers compute in float32
            return self.regularizer(as_matrix(w) if name == "keras_orthogonal" else w)

        def unsupported(self, shape: tuple[int, ...]) -> str | None:
            return unsupported(shape, self.params) if unsupported else None

    KerasPenalty.defaults = defaults
    KerasPenalty.__name__ = KerasPenalty.__qualname__ = f"{factory.__name__}Penalty"
    KerasPenalty.__doc__ = doc
    register(name)(KerasPenalty)


_keras_penalty("keras_l1", keras.regularizers.L1, "Keras's `L1(l1)`: `l1 * sum(|w|)`.", l1=0.01)
_keras_penalty("keras_l2", keras.regularizers.L2, "Keras's `L2(l2)`: `l2 * sum(w^2)`.", l2=0.01)
_keras_penalty(
    "keras_l1l2",
    keras.regularizers.L1L2,
    "Keras's `L1L2(l1, l2)`: `l1 * sum(|w|) + l2 * sum(w^2)`.",
    l1=0.01,
    l2=0.01,
)


def _one_row_or_column(shape: tuple[int, ...], params: dict[str, Any]) -> str | None:
    """Keras's OrthogonalRegularizer averages over distinct pairs: one row (column) has none."""
    rows, columns = math.prod(shape[:-1]), shape[-1]
    if params["mode"] == "columns" and columns == 1:
        return "one column, so no pair of columns to compare (Keras's regularizer gives NaN)"
    if params["mode"] == "rows" and rows == 1:
        return "one row, so no pair of rows to compare (Keras's regularizer gives NaN)"
    return None


_keras_penalty(
    "keras_orthogonal",
    keras.regularizers.OrthogonalRegularizer,
    "Keras's `OrthogonalRegularizer(factor, mode)`: `factor` times the mean absolute cosine "
    "between distinct rows (or columns) of W. Not the article's `||W^T W - I||_F^2`. Undefined "
    "(NaN) on a weight with one column (`mode=columns`) or one row (`mode=rows`): a term leaves "
    "such weights out.",
    unsupported=_one_row_or_column,
    factor=0.01,
    mode="rows",
)
