"""Weight penalties: Keras regularizers written with `keras.ops` only, plus their registry.

Every penalty is a `keras.regularizers.Regularizer` whose `__call__(w)` returns `scale * value(w)`.
The scale lives in a non-trainable `keras.Variable`, so it can change during training without
retracing the compiled train step. Values are computed in float32 for float16/bfloat16 weights.

Use `get(name, **params)` to build one, `available()` to list names and `register(name)` to add your
own (a `Penalty` subclass, or a function `fn(w, **params) -> scalar`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from regfw.registry import Registry

_REGISTRY: Registry[type[Penalty]] = Registry("penalty")
_LOW_PRECISION = ("float16", "bfloat16")
EPS = 1e-12  # keeps sqrt and divisions smooth and finite at all-zero weights


def check_scale(scale: Any) -> float:
    """Returns `scale` as a float.

    Raises:
        ValueError: If `scale` is not a finite number >= 0.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)):
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    if not math.isfinite(scale) or scale < 0:
        raise ValueError(f"scale must be a finite number >= 0, got {scale!r}")
    return float(scale)


def check_iterations(iterations: Any) -> int:
    """Returns a power-iteration count as an int.

    Raises:
        ValueError: If it is not an integer >= 1.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    return iterations


class Penalty(keras.regularizers.Regularizer):
    """Base class: `scale * value(w)`, with the scale in a non-trainable variable.

    Subclasses implement `value(w)` with `keras.ops` and pass their parameters to `__init__` as
    keyword arguments, which makes `get_config` round-trip.

    Args:
        scale: Multiplier of the penalty; a finite number >= 0.
        **params: The penalty's own parameters, stored in `self.params`.
    """

    name: str = ""

    def __init__(self, scale: float = 1.0, **params: Any) -> None:
        self.params = params
        self._scale_value = check_scale(scale)
        self._scale = keras.Variable(
            self._scale_value, trainable=False, dtype="float64", name="penalty_scale"
        )

    @property
    def scale(self) -> float:
        """The current scale, as it was given (a Python float, not rounded to float32)."""
        return self._scale_value

    @property
    def scale_variable(self) -> keras.Variable:
        """The variable holding the scale (assign to it to change the scale without retracing)."""
        return self._scale

    def set_scale(self, scale: float) -> None:
        """Sets the scale; takes effect at the next step, without retracing."""
        self._scale_value = check_scale(scale)
        self._scale.assign(self._scale_value)

    def value(self, w: Any) -> Any:
        """Returns the unscaled penalty of one weight tensor."""
        raise NotImplementedError

    def __call__(self, w: Any) -> Any:
        dtype = keras.backend.standardize_dtype(w.dtype)
        if dtype in _LOW_PRECISION or not dtype.startswith("float"):
            w = ops.cast(w, "float32")
        value = self.value(w)
        return ops.cast(self._scale, value.dtype) * value

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale, **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def register(name: str) -> Callable[[Any], Any]:
    """Registers a penalty under `name` (decorator); a taken name is an error.

    The decorated object is either a `Penalty` subclass, or a function `fn(w, **params)` returning
    a scalar written with `keras.ops`; a function is wrapped in a `Penalty` subclass whose
    parameters are the function's keyword arguments (with their defaults) plus `scale`.

    Example:
        >>> @register("l4")
        ... def l4(w):
        ...     return keras.ops.sum(w**4)

    Raises:
        ValueError: If `name` is already registered.
    """

    def decorator(obj: Any) -> Any:
        cls = obj if isinstance(obj, type) else _penalty_class_from_function(name, obj)
        if not issubclass(cls, Penalty):
            raise TypeError(f"register('{name}') expects a Penalty subclass or a function.")
        _REGISTRY.add(name, cls)
        cls.name = name
        return obj

    return decorator


def get(name: str, **params: Any) -> Penalty:
    """Builds the penalty registered under `name` with `params` (including `scale`).

    Raises:
        regfw.registry.UnknownNameError: If `name` is not registered (lists the available names).
        TypeError: If a parameter is not one the penalty takes.
    """
    cls = _REGISTRY.lookup(name)
    try:
        inspect.signature(cls).bind(**params)
    except TypeError:
        allowed = ", ".join(inspect.signature(cls).parameters)
        raise TypeError(
            f"penalty '{name}' got parameters {sorted(params)}; it takes: {allowed}"
        ) from None
    return cls(**params)


def available() -> list[str]:
    """Returns the registered penalty names, sorted."""
    return _REGISTRY.names()


def _penalty_class_from_function(name: str, fn: Callable[..., Any]) -> type[Penalty]:
    defaults = {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.default is not inspect.Parameter.empty
    }

    class FunctionPenalty(Penalty):
        def __init__(self, scale: float = 1.0, **params: Any) -> None:
            unknown = set(params) - set(defaults)
            if unknown:
                raise TypeError(f"penalty '{name}' takes no parameters {sorted(unknown)}")
            super().__init__(scale, **{**defaults, **params})

        def value(self, w: Any) -> Any:
            return fn(w, **self.params)

    FunctionPenalty.__name__ = FunctionPenalty.__qualname__ = f"{fn.__name__}_penalty"
    FunctionPenalty.__doc__ = fn.__doc__
    return FunctionPenalty


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


@register("clip")
class ClipDeviation(Penalty):
    """Squared deviation from a clipping range: `sum((w - clip(w, lower, upper))^2)`.

    The article's example 1 (default scale 0.01, bounds -1 and 1). Smooth everywhere.
    """

    def __init__(self, scale: float = 0.01, lower: float = -1.0, upper: float = 1.0) -> None:
        lower, upper = float(lower), float(upper)
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
        super().__init__(scale, alpha=float(alpha))

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


def _keras_penalty(name: str, factory: Callable[..., Any], doc: str, **defaults: Any) -> None:
    """Registers one of Keras's own regularizers under `name`, as a Penalty with `scale` 1."""

    class KerasPenalty(Penalty):
        def __init__(self, scale: float = 1.0, **params: Any) -> None:
            unknown = set(params) - set(defaults)
            if unknown:
                raise TypeError(f"penalty '{name}' takes no parameters {sorted(unknown)}")
            super().__init__(scale, **{**defaults, **params})
            self.regularizer = factory(**self.params)

        def value(self, w: Any) -> Any:
            w = ops.cast(w, "float32")  # Keras's regularizers compute in float32
            return self.regularizer(as_matrix(w) if name == "keras_orthogonal" else w)

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
_keras_penalty(
    "keras_orthogonal",
    keras.regularizers.OrthogonalRegularizer,
    "Keras's `OrthogonalRegularizer(factor, mode)`: `factor` times the mean absolute cosine "
    "between distinct rows (or columns) of W. Not the article's `||W^T W - I||_F^2`.",
    factor=0.01,
    mode="rows",
)


class Combined(keras.regularizers.Regularizer):
    """The sum of several penalties on one weight (when two terms select the same weight).

    Args:
        parts: The penalties to add.
    """

    def __init__(self, parts: list[Penalty]) -> None:
        self.parts = list(parts)

    def __call__(self, w: Any) -> Any:
        values = [part(w) for part in self.parts]
        return values[0] if len(values) == 1 else ops.sum(ops.stack(values))

    def get_config(self) -> dict[str, Any]:
        return {"parts": [{"name": p.name, **p.get_config()} for p in self.parts]}
