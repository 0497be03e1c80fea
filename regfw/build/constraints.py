"""Hard constraints: projections Keras applies to a weight after every optimizer step.

They are the hard counterparts of penalties (`clip` vs the clip penalty, `max_norm` vs the soft
max-norm penalty), attached with `variable.constraint`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from regfw.registry import Registry

CONSTRAINTS: Registry[Callable[..., keras.constraints.Constraint]] = Registry("constraint")


class Clip(keras.constraints.Constraint):
    """Clips every entry into `[lower, upper]`.

    Args:
        lower: Lower bound.
        upper: Upper bound.
    """

    def __init__(self, lower: float = -1.0, upper: float = 1.0) -> None:
        self.lower, self.upper = float(lower), float(upper)

    def __call__(self, w: Any) -> Any:
        return ops.clip(w, self.lower, self.upper)

    def get_config(self) -> dict[str, float]:
        return {"lower": self.lower, "upper": self.upper}


def _column_axes(shape: tuple[int, ...]) -> list[int]:
    """The axes holding one column (output unit or filter): all but the last."""
    return list(range(len(shape) - 1)) or [0]


@CONSTRAINTS.register("clip")
def _clip(shape: tuple[int, ...], lower: float = -1.0, upper: float = 1.0) -> Clip:
    return Clip(lower, upper)


@CONSTRAINTS.register("max_norm")
def _max_norm(shape: tuple[int, ...], max_value: float = 3.0) -> keras.constraints.Constraint:
    return keras.constraints.MaxNorm(max_value, axis=_column_axes(shape))


@CONSTRAINTS.register("unit_norm")
def _unit_norm(shape: tuple[int, ...]) -> keras.constraints.Constraint:
    return keras.constraints.UnitNorm(axis=_column_axes(shape))


@CONSTRAINTS.register("non_neg")
def _non_neg(shape: tuple[int, ...]) -> keras.constraints.Constraint:
    return keras.constraints.NonNeg()


def build(name: str, shape: tuple[int, ...], **params: Any) -> keras.constraints.Constraint:
    """Builds the constraint `name` for a weight of `shape` (norms are taken per column)."""
    return CONSTRAINTS.lookup(name)(tuple(shape), **params)
