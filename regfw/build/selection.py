"""Which weights a penalty term touches: globs on Keras variable paths and a minimum rank."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Any

from regfw.errors import UserError


class SelectionError(UserError, ValueError):
    """A penalty term matched no weight; the message lists the model's variable paths."""


def matches(
    variable: Any, include: Sequence[str] | None, exclude: Sequence[str], min_ndim: int
) -> bool:
    """Whether one variable is selected (see `select_weights` for the arguments)."""
    return (
        len(variable.shape) >= min_ndim
        and (not include or any(fnmatch.fnmatchcase(variable.path, p) for p in include))
        and not any(fnmatch.fnmatchcase(variable.path, p) for p in exclude or ())
    )


def select_weights(
    model: Any,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    min_ndim: int = 0,
    term: str = "penalty",
) -> list[Any]:
    """Returns the trainable variables of `model` a penalty term applies to.

    Args:
        model: A built Keras model.
        include: Glob patterns on `variable.path` (e.g. `*/kernel`); None or empty selects all.
        exclude: Glob patterns of paths to leave out.
        min_ndim: Only variables with at least this many dimensions (2 leaves out biases).
        term: The term's name, for the error message.

    Raises:
        SelectionError: If nothing matches.
    """
    include, exclude = list(include or []), list(exclude or [])
    chosen = [v for v in model.trainable_variables if matches(v, include, exclude, min_ndim)]
    if not chosen:
        paths = ", ".join(f"{v.path} {tuple(v.shape)}" for v in model.trainable_variables)
        raise SelectionError(
            f"penalty term '{term}' (include={include or ['*']}, exclude={exclude}, "
            f"min_ndim={min_ndim}) matches no weight. The model's weights: {paths}"
        )
    return chosen
