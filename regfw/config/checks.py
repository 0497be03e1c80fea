"""Primitive config checks, each raising a one-line `ConfigError`.

Every message reads `<key>=<value>: <what is allowed>`, e.g.
`penalty.scale=-1.0: expected a finite number >= 0`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from omegaconf import OmegaConf

from regfw.errors import ConfigError
from regfw.registry import did_you_mean

__all__ = ["ConfigError", "choice", "flag", "int_list", "is_number", "number", "string_list"]


FLOAT32_MAX = 3.4028234663852886e38  # numbers reach the model as float32
SEED_MAX = 2**32 - 1  # NumPy's and scikit-learn's seeds are 32-bit


def is_number(value: Any) -> bool:
    """Whether `value` is an int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(
    key: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> float:
    """Checks that `value` is a finite number (an int if `integer`) within the given bounds.

    Raises:
        ConfigError: Otherwise; the message states the allowed range.
    """
    kind = "an integer" if integer else "a finite number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {_bound(low)}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {_bound(high)}")
    allowed = f"expected {kind}" + (f" {' and '.join(bounds)}" if bounds else "")
    ok = is_number(value) and (not integer or isinstance(value, int)) and math.isfinite(value)
    if ok and not integer and abs(value) > FLOAT32_MAX:  # it would overflow in the model
        raise ConfigError(
            key, value, f"{allowed}, within float32's range (|x| <= {FLOAT32_MAX:.3g})"
        )
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError(key, value, allowed)
    return value


def _bound(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def choice(key: str, value: Any, allowed: Sequence[Any]) -> Any:
    """Checks that `value` is one of `allowed`, with a did-you-mean for near misses."""
    if value not in allowed:
        raise ConfigError(
            key,
            value,
            f"expected one of {', '.join(map(str, allowed))}.{did_you_mean(value, allowed)}",
        )
    return value


def flag(key: str, value: Any) -> bool:
    """Checks that `value` is true or false."""
    if not isinstance(value, bool):
        raise ConfigError(key, value, "expected true or false")
    return value


def int_list(key: str, value: Any, *, low: int, allow_empty: bool = False) -> list[int]:
    """Checks a list of integers >= `low`."""
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else None
    if items is None or (not items and not allow_empty):
        raise ConfigError(key, value, f"expected a non-empty list of integers >= {low}")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int) or item < low:
            raise ConfigError(key, value, f"expected a non-empty list of integers >= {low}")
    return items


def string_list(
    key: str, value: Any, allowed: str = "expected a list of glob patterns such as ['*/kernel']"
) -> list[str]:
    """Checks a list of non-empty strings (by default, glob patterns)."""
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else None
    if items is None or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(key, value, allowed)
    return items
