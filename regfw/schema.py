"""Checks a composed config before TensorFlow is imported: types, ranges, allowed values, pairs.

Every failure is a `ConfigError` whose message names the config key, the value given and what is
allowed, in one line: `penalty.scale=-1.0: expected a finite number >= 0`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regfw.registry import did_you_mean
from regfw.schedules import SCHEDULES

MODELS = ("mlp", "cnn", "rnn", "application")
KERAS_DATASETS = ("mnist", "fashion_mnist", "cifar10")
DATASETS = ("synthetic", "breast_cancer", "digits", "adding", *KERAS_DATASETS, "file")
RNN_CELLS = ("lstm", "gru", "simple")
POOLINGS = ("max", "average", "none")
# Arguments of a keras.applications constructor that regfw sets itself.
APPLICATION_OWN_ARGS = ("include_top", "weights", "input_tensor", "input_shape", "pooling",
                        "classes", "classifier_activation")  # fmt: skip
# What a model needs of the data: (len of data.input_shape, what that means, data to try).
MODEL_INPUTS = {
    "cnn": (3, "a conv net needs image data (input_shape [height, width, channels])", "digits"),
    "rnn": (2, "a recurrent net needs sequence data (input_shape [timesteps, features])", "adding"),
    "application": (
        3,
        "a keras.applications model needs image data (input_shape [height, width, channels])",
        "cifar10",
    ),
}
OPTIMIZERS = ("adam", "sgd", "adamw")
ACTIVATIONS = (
    "relu", "tanh", "sigmoid", "elu", "selu", "gelu", "silu", "swish", "softplus", "softsign",
    "leaky_relu", "relu6", "mish", "linear", "exponential", "hard_sigmoid",
)  # fmt: skip
MONITORS = ("val_data_loss", "val_loss", "data_loss", "loss")
SELECTION_KEYS = ("include", "exclude", "min_ndim")


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


def validate(cfg: DictConfig) -> None:
    """Checks every group of a composed config.

    Raises:
        ConfigError: For the first value that is not allowed.
    """
    _validate_data(cfg.data)
    _validate_model(cfg.model, cfg.data)
    _validate_terms(cfg)
    string_list("plugins", cfg.get("plugins", []), "expected a list of module names or .py paths")
    _validate_optimizer(cfg.optimizer)
    _validate_trainer(cfg.trainer, cfg.data.num_classes)


def _validate_data(data: DictConfig) -> None:
    choice("data.name", data.name, DATASETS)
    int_list("data.input_shape", data.input_shape, low=1)
    classes = data.num_classes
    if not (_is_number(classes) and isinstance(classes, int) and (classes == 0 or classes >= 2)):
        allowed = "expected 0 (regression) or an integer >= 2 (classes)"
        raise ConfigError("data.num_classes", classes, allowed)
    if "validation_split" in data:
        number("data.validation_split", data.validation_split, low=0, high=1, low_open=True,
               high_open=True)  # fmt: skip
    for key, low in (("n_samples", 10), ("seed", 0), ("timesteps", 2)):
        if key in data:
            number(f"data.{key}", data[key], low=low, integer=True)
    if data.get("limit") is not None:
        number("data.limit", data.limit, low=1, integer=True)
    if data.name == "file" or data.get("path") is not None:
        _validate_path(data)
    if data.name == "file" and (not isinstance(data.label_column, str) or not data.label_column):
        raise ConfigError("data.label_column", data.label_column, "expected a column name")


def _validate_path(data: DictConfig) -> None:
    suffixes = (".npz", ".csv") if data.name == "file" else (".npz",)
    contents = "arrays x and y" if data.name == "file" else "x_train, y_train, x_test, y_test"
    allowed = f"expected the path of a {' or '.join(suffixes)} file ({contents})"
    path = data.get("path")
    if not isinstance(path, str) or Path(path).suffix.lower() not in suffixes:
        raise ConfigError("data.path", path, allowed)
    if not Path(path).is_file():
        raise ConfigError("data.path", path, f"no such file (from {Path.cwd()}); {allowed}")


def _validate_model(model: DictConfig, data: DictConfig) -> None:
    choice("model.name", model.name, MODELS)
    _MODEL_CHECKS[model.name](model)
    if model.name in MODEL_INPUTS:
        rank, need, example = MODEL_INPUTS[model.name]
        if len(data.input_shape) != rank:
            raise ConfigError(
                "model",
                model.name,
                f"{need}, but data={data.name} has input_shape {list(data.input_shape)}; use "
                f"model=mlp or data such as data={example}",
            )


def _validate_mlp(model: DictConfig) -> None:
    int_list("model.units", model.units, low=1)
    choice("model.activation", model.activation, ACTIVATIONS)
    number("model.dropout", model.dropout, low=0, high=1, high_open=True)
    flag("model.batch_norm", model.batch_norm)


def _validate_cnn(model: DictConfig) -> None:
    int_list("model.filters", model.filters, low=1)
    number("model.kernel_size", model.kernel_size, low=1, integer=True)
    choice("model.pooling", model.pooling, POOLINGS)
    number("model.dense_units", model.dense_units, low=0, integer=True)
    choice("model.activation", model.activation, ACTIVATIONS)


def _validate_rnn(model: DictConfig) -> None:
    choice("model.cell", model.cell, RNN_CELLS)
    int_list("model.units", model.units, low=1)
    choice("model.activation", model.activation, ACTIVATIONS)


def _validate_application(model: DictConfig) -> None:
    # The name itself is checked against keras.applications when the model is built.
    if not isinstance(model.architecture, str) or not model.architecture:
        allowed = "expected a keras.applications model name such as MobileNetV2"
        raise ConfigError("model.architecture", model.architecture, allowed)
    choice("model.pooling", model.pooling, ("avg", "max"))
    if model.kwargs is None:
        return
    if not OmegaConf.is_dict(model.kwargs):
        allowed = "expected null or a mapping such as {alpha: 0.35}"
        raise ConfigError("model.kwargs", model.kwargs, allowed)
    taken = sorted(set(model.kwargs) & set(APPLICATION_OWN_ARGS))
    if taken:
        allowed = f"regfw sets {', '.join(taken)} itself (weights=None, no top)"
        raise ConfigError("model.kwargs", model.kwargs, allowed)


_MODEL_CHECKS = {
    "mlp": _validate_mlp,
    "cnn": _validate_cnn,
    "rnn": _validate_rnn,
    "application": _validate_application,
}


PARAM_RULES: dict[str, dict[str, Any]] = {
    "alpha": {"low": 0},
    "l1": {"low": 0},
    "l2": {"low": 0},
    "factor": {"low": 0},
    "max_value": {"low": 0, "low_open": True},
    "iterations": {"low": 1, "integer": True},
    "lower": {},
    "upper": {},
}
CONSTRAINTS = ("clip", "max_norm", "unit_norm", "non_neg")


def _validate_terms(cfg: DictConfig) -> None:
    main = OmegaConf.to_container(cfg.penalty, resolve=True)
    if main.get("name") != "none":
        _validate_term("penalty", main)
    else:
        number("penalty.scale", main.get("scale"), low=0)
    for group, kind in (("penalties", "penalty"), ("constraints", "constraint")):
        node = cfg.get(group)
        terms = {} if node is None else OmegaConf.to_container(node, resolve=True)
        if not isinstance(terms, dict):
            raise ConfigError(group, terms, f"expected a mapping of term name -> {kind} config")
        for name, spec in terms.items():
            path = f"{group}.{name}"
            if not isinstance(spec, dict):
                raise ConfigError(path, spec, f"expected a {kind} config: +{kind}@{path}=<option>")
            if kind == "penalty" and name == main.get("name"):
                raise ConfigError(
                    path, name, f"the term name is taken by penalty={name}; rename it"
                )
            _validate_term(path, spec, constraint=kind == "constraint")


def _validate_term(path: str, spec: dict[str, Any], constraint: bool = False) -> None:
    name = spec.get("name")
    if constraint:
        choice(f"{path}.name", name, CONSTRAINTS)
    elif not isinstance(name, str) or not name or name == "???":
        raise ConfigError(f"{path}.name", name, "expected the name of a registered penalty")
    else:
        number(f"{path}.scale", spec.get("scale"), low=0)
    if "include" in spec:
        string_list(f"{path}.include", spec["include"])
    if "exclude" in spec:
        string_list(f"{path}.exclude", spec["exclude"])
    if "min_ndim" in spec:
        number(f"{path}.min_ndim", spec["min_ndim"], low=0, integer=True)
    for key, rule in PARAM_RULES.items():
        if key in spec:
            number(f"{path}.{key}", spec[key], **rule)
    if "lower" in spec and "upper" in spec and spec["lower"] > spec["upper"]:
        raise ConfigError(
            f"{path}.lower", spec["lower"], f"expected lower <= upper (upper={spec['upper']})"
        )
    if "mode" in spec:
        choice(f"{path}.mode", spec["mode"], ("rows", "columns"))
    if "schedule" in spec:
        _validate_schedule(f"{path}.schedule", spec["schedule"])


def _validate_schedule(path: str, schedule: Any) -> None:
    if not isinstance(schedule, dict):
        raise ConfigError(path, schedule, "expected a mapping with name: " + ", ".join(SCHEDULES))
    choice(f"{path}.name", schedule.get("name"), SCHEDULES)
    if schedule["name"] in ("warmup", "cosine"):
        number(f"{path}.epochs", schedule.get("epochs"), low=1, integer=True)
    if schedule["name"] == "step":
        number(f"{path}.every", schedule.get("every"), low=1, integer=True)
        number(f"{path}.factor", schedule.get("factor"), low=0)
    if schedule["name"] == "cosine":
        number(f"{path}.final", schedule.get("final"), low=0, high=1)


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
    for key in ("histograms", "resume", "deterministic"):
        if key in trainer:
            choice(f"trainer.{key}", trainer[key], (True, False))
    choice("trainer.monitor", trainer.monitor, MONITORS)
    weights = trainer.class_weight
    if weights is not None and num_classes == 0:
        allowed = "expected null: the data is a regression (data.num_classes=0)"
        raise ConfigError("trainer.class_weight", weights, allowed)
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
