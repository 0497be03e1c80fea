"""Primitive config checks, each raising a one-line `ConfigError`.

Every message reads `<key>=<value>: <what is allowed>`, e.g.
`penalty.scale=-1.0: expected a finite number >= 0`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regfw.registry import did_you_mean


class ConfigError(ValueError):
    """A config value that is not allowed.

    Args:
        key: The dotted config path, e.g. `penalty.scale`.
        value: The value given.
        allowed: What is allowed instead, e.g. `expected a finite number >= 0`.
    """

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, " ".join(str(allowed).split())
        super().__init__(f"{key}={_show(value)}: {self.allowed}")


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, Mapping, Sequence)) and not isinstance(value, str):
        value = OmegaConf.to_container(value) if isinstance(value, DictConfig) else value
    return repr(value) if isinstance(value, str) else str(value)


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
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    allowed = f"expected {kind}" + (f" {' and '.join(bounds)}" if bounds else "")
    ok = is_number(value) and (not integer or isinstance(value, int)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        raise ConfigError(key, value, allowed)
    return value


def choice(key: str, value: Any, allowed: Sequence[Any]) -> Any:
    """Checks that `value` is one of `allowed`, with a did-you-mean for near misses."""
    if value not in allowed:
        raise ConfigError(
            key,
            value,
            f"expected one of {', '.join(map(str, allowed))}.{did_you_mean(str(value), allowed)}",
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
