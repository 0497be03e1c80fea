"""Checks a composed config before TensorFlow is imported: types, ranges, allowed values, pairs.

Every failure is a `ConfigError` whose message names the config key, the value given and what is
allowed, in one line: `penalty.scale=-1.0: expected a finite number >= 0`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regfw.registry import did_you_mean

MODELS = ("mlp", "cnn")
DATASETS = ("synthetic", "breast_cancer", "digits")
OPTIMIZERS = ("adam", "sgd", "adamw")
ACTIVATIONS = (
    "relu", "tanh", "sigmoid", "elu", "selu", "gelu", "silu", "swish", "softplus", "softsign",
    "leaky_relu", "relu6", "mish", "linear", "exponential", "hard_sigmoid",
)  # fmt: skip
MONITORS = ("val_data_loss", "val_loss", "data_loss", "loss")
SELECTION_KEYS = ("include", "exclude", "min_ndim")
STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


class ConfigError(ValueError):
    """A config value that is not allowed.

    Args:
        key: The dotted config path, e.g. `penalty.scale`.
        value: The value given.
        allowed: What is allowed instead, e.g. `expected a finite number >= 0`.
    """

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={_show(value)}: {allowed}")


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, Mapping, Sequence)) and not isinstance(value, str):
        value = OmegaConf.to_container(value) if isinstance(value, DictConfig) else value
    return repr(value) if isinstance(value, str) else str(value)


def _is_number(value: Any) -> bool:
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
    ok = _is_number(value) and (not integer or isinstance(value, int)) and math.isfinite(value)
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


def boolean(key: str, value: Any) -> bool:
    """Checks that `value` is true or false (not a number or a string)."""
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


def string_list(key: str, value: Any) -> list[str]:
    """Checks a list of strings (glob patterns)."""
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, (list, tuple)) else None
    if items is None or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(key, value, "expected a list of glob patterns such as ['*/kernel']")
    return items


def validate(cfg: DictConfig) -> None:
    """Checks every group of a composed config.

    Raises:
        ConfigError: For the first value that is not allowed.
    """
    _validate_data(cfg.data)
    _validate_model(cfg.model, cfg.data)
    _validate_penalty(cfg.penalty)
    _validate_optimizer(cfg.optimizer)
    _validate_trainer(cfg.trainer, cfg.data.num_classes)


def _validate_data(data: DictConfig) -> None:
    choice("data.name", data.name, DATASETS)
    int_list("data.input_shape", data.input_shape, low=1)
    number("data.num_classes", data.num_classes, low=2, integer=True)
    number("data.validation_split", data.validation_split, low=0, high=1, low_open=True,
           high_open=True)  # fmt: skip
    if data.name == "synthetic":
        number("data.n_samples", data.n_samples, low=10, integer=True)
        number("data.seed", data.seed, low=0, integer=True)


def _validate_model(model: DictConfig, data: DictConfig) -> None:
    choice("model.name", model.name, MODELS)
    choice("model.activation", model.activation, ACTIVATIONS)
    if model.name == "mlp":
        int_list("model.units", model.units, low=1)
    else:
        int_list("model.filters", model.filters, low=1)
        number("model.kernel_size", model.kernel_size, low=1, integer=True)
        number("model.dense_units", model.dense_units, low=0, integer=True)
        if len(data.input_shape) not in (2, 3):
            raise ConfigError(
                "model",
                model.name,
                f"a conv net needs image data (input_shape [height, width, channels]), but "
                f"data={data.name} has input_shape {list(data.input_shape)}; use model=mlp or "
                "image data such as data=digits",
            )


def _validate_penalty(penalty: DictConfig) -> None:
    if not isinstance(penalty.get("name"), str) or not penalty.name:
        raise ConfigError("penalty.name", penalty.get("name"), "expected a penalty name")
    number("penalty.scale", penalty.get("scale"), low=0)
    if penalty.name == "none":
        return
    if "include" in penalty:
        string_list("penalty.include", penalty.include)
    if "exclude" in penalty:
        string_list("penalty.exclude", penalty.exclude)
    if "min_ndim" in penalty:
        number("penalty.min_ndim", penalty.min_ndim, low=0, integer=True)
    if penalty.name == "clip":
        lower = number("penalty.lower", penalty.lower)
        upper = number("penalty.upper", penalty.upper)
        if lower > upper:
            raise ConfigError("penalty.lower", lower, f"expected lower <= upper (upper={upper})")
    if penalty.name == "l1":
        number("penalty.alpha", penalty.alpha, low=0)


def _validate_optimizer(optimizer: DictConfig) -> None:
    choice("optimizer.name", optimizer.name, OPTIMIZERS)
    number("optimizer.learning_rate", optimizer.learning_rate, low=0, low_open=True)
    if "momentum" in optimizer:
        number("optimizer.momentum", optimizer.momentum, low=0, high=1, high_open=True)
    if "weight_decay" in optimizer:
        number("optimizer.weight_decay", optimizer.weight_decay, low=0)


def _validate_trainer(trainer: DictConfig, num_classes: int) -> None:
    number("trainer.epochs", trainer.epochs, low=1, integer=True)
    number("trainer.batch_size", trainer.batch_size, low=1, integer=True)
    number("trainer.seed", trainer.seed, low=0, integer=True)
    choice("trainer.verbose", trainer.verbose, (0, 1, 2))
    choice("trainer.monitor", trainer.monitor, MONITORS)
    choice("trainer.strategy", trainer.strategy, STRATEGIES)
    choice("trainer.precision", trainer.precision, PRECISIONS)
    boolean("trainer.jit_compile", trainer.jit_compile)
    weights = trainer.class_weight
    if weights is None or weights == "balanced":
        return
    allowed = (
        f"expected null, 'balanced' or a mapping from class (0..{num_classes - 1}) to a weight > 0"
    )
    if not OmegaConf.is_dict(weights) and not isinstance(weights, Mapping):
        raise ConfigError("trainer.class_weight", weights, allowed)
    for label, weight in weights.items():
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < num_classes:
            raise ConfigError("trainer.class_weight", weights, f"class {label!r}: {allowed}")
        if not _is_number(weight) or not math.isfinite(weight) or weight <= 0:
            raise ConfigError("trainer.class_weight", weights, f"class {label}: {allowed}")
