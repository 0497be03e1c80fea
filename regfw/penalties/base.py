"""The penalty base class, the registry (`register`, `get`, `available`) and `Combined`."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

from regfw.registry import Registry

_REGISTRY: Registry[type[Penalty]] = Registry("penalty")
_LOW_PRECISION = ("float16", "bfloat16")


def _is_real(value: Any) -> bool:
    """Any real number (Python's or NumPy's), but not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_number(name: str, value: Any, low: float | None = None, low_open: bool = False) -> float:
    """Returns a penalty parameter as a float.

    Raises:
        ValueError: If it is not a finite real number (NumPy scalars are fine, bools are not)
            above `low` (or at it, unless `low_open`).
    """
    bound = "" if low is None else f" {'>' if low_open else '>='} {low:g}"
    if not _is_real(value) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return float(value)


def check_scale(scale: Any) -> float:
    """Returns `scale` as a float.

    Raises:
        ValueError: If `scale` is not a finite number >= 0.
    """
    return check_number("scale", scale, low=0)


def check_iterations(iterations: Any) -> int:
    """Returns a power-iteration count as an int.

    Raises:
        ValueError: If it is not an integer >= 1 (NumPy integers are fine, bools are not).
    """
    if not isinstance(iterations, numbers.Integral) or isinstance(iterations, (bool, np.bool_)):
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    if iterations < 1:
        raise ValueError(f"iterations must be an integer >= 1, got {iterations!r}")
    return int(iterations)


def scale_dtype() -> str:
    """The dtype of penalty scales: float64, except on JAX without x64 (then float32).

    JAX truncates float64 to float32 (with a warning) unless `jax_enable_x64` is set; a float32
    scale is what every float32 weight's penalty is multiplied by anyway.
    """
    if keras.config.backend() == "jax":
        import jax

        return "float64" if jax.config.jax_enable_x64 else "float32"
    return "float64"


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
        self._scale = keras.Variable(
            check_scale(scale), trainable=False, dtype=scale_dtype(), name="penalty_scale"
        )

    @property
    def scale(self) -> float:
        """The current scale: the value of `scale_variable`, its one source of truth."""
        return float(ops.convert_to_numpy(self._scale))

    @property
    def scale_variable(self) -> keras.Variable:
        """The variable holding the scale (assign to it to change the scale without retracing)."""
        return self._scale

    def set_scale(self, scale: float) -> None:
        """Sets the scale; takes effect at the next step, without retracing."""
        self._scale.assign(check_scale(scale))

    def bind_scale(self, variable: keras.Variable) -> None:
        """Holds the scale in `variable` from now on, starting from the current scale.

        The variable is a model's, so that a stateless step (JAX) carries it as state.
        """
        variable.assign(self.scale)
        self._scale = variable

    def value(self, w: Any) -> Any:
        """Returns the unscaled penalty of one weight tensor."""
        raise NotImplementedError

    def unsupported(self, shape: tuple[int, ...]) -> str | None:
        """Why the penalty is undefined on a weight of `shape` (None: it is defined).

        A term leaves such weights out (and says so) instead of adding NaN to the loss.
        """
        return None

    def __call__(self, w: Any) -> Any:
        return self._scaled(self.value(as_float(w)))

    def _scaled(self, value: Any) -> Any:
        return ops.cast(self._scale, value.dtype) * value

    def get_config(self) -> dict[str, Any]:
        return {"scale": self.scale, **self.params}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def as_float(w: Any) -> Any:
    """`w` as float32 if it is half precision (or not floating), else unchanged."""
    dtype = keras.backend.standardize_dtype(w.dtype)
    if dtype in _LOW_PRECISION or not dtype.startswith("float"):
        return ops.cast(w, "float32")
    return w


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

    class FunctionPenalty(KeywordPenalty):
        def value(self, w: Any) -> Any:
            return fn(w, **self.params)

    FunctionPenalty.defaults = defaults

    FunctionPenalty.__name__ = FunctionPenalty.__qualname__ = f"{fn.__name__}_penalty"
    FunctionPenalty.__doc__ = fn.__doc__
    return FunctionPenalty


class KeywordPenalty(Penalty):
    """A penalty whose parameters are the keyword arguments in the class's `defaults`.

    Used for penalties built from a function or from one of Keras's regularizers.
    """

    defaults: dict[str, Any] = {}

    def __init__(self, scale: float = 1.0, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise TypeError(f"penalty '{self.name}' takes no parameters {sorted(unknown)}")
        super().__init__(scale, **{**self.defaults, **params})


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
