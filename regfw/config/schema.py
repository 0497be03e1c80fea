"""Checks a composed config before TensorFlow is imported: types, ranges, allowed values, pairs.

Every failure is a `ConfigError` whose message names the config key, the value given and what is
allowed, in one line: `penalty.scale=-1.0: expected a finite number >= 0`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from regfw.config.checks import (
    SEED_MAX,
    ConfigError,
    choice,
    flag,
    int_list,
    is_number,
    number,
    string_list,
)
from regfw.config.terms import validate_terms

REQUIRED_GROUPS = ("model", "data", "penalty", "optimizer", "trainer")
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
STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def validate(cfg: DictConfig) -> None:
    """Checks every group of a composed config.

    Raises:
        ConfigError: For the first value that is not allowed.
    """
    for group in REQUIRED_GROUPS:
        if not OmegaConf.is_dict(cfg.get(group)):
            raise ConfigError(
                group, cfg.get(group), f"every run needs the {group} group; choose an option "
                f"({group}=<option>){' or penalty=none' if group == 'penalty' else ''}",
            )  # fmt: skip
    _validate_data(cfg.data)
    _validate_model(cfg.model, cfg.data)
    validate_terms(cfg)
    string_list("plugins", cfg.get("plugins", []), "expected a list of module names or .py paths")
    _validate_optimizer(cfg.optimizer)
    _validate_trainer(cfg.trainer, cfg.data.num_classes)


def _validate_data(data: DictConfig) -> None:
    choice("data.name", data.name, DATASETS)
    int_list("data.input_shape", data.input_shape, low=1)
    classes = data.num_classes
    if not (is_number(classes) and isinstance(classes, int) and (classes == 0 or classes >= 2)):
        allowed = "expected 0 (regression) or an integer >= 2 (classes)"
        raise ConfigError("data.num_classes", classes, allowed)
    if "validation_split" in data:
        number("data.validation_split", data.validation_split, low=0, high=1, low_open=True,
               high_open=True)  # fmt: skip
    for key, low, high in (("n_samples", 10, None), ("seed", 0, SEED_MAX), ("timesteps", 2, None)):
        if key in data:
            number(f"data.{key}", data[key], low=low, high=high, integer=True)
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
    number("trainer.seed", trainer.seed, low=0, high=SEED_MAX, integer=True)
    number("trainer.checkpoint_every", trainer.checkpoint_every, low=0, integer=True)
    choice("trainer.verbose", trainer.verbose, (0, 1, 2))
    for key in ("histograms", "diagnostics", "resume", "deterministic", "jit_compile"):
        flag(f"trainer.{key}", trainer[key])
    choice("trainer.monitor", trainer.monitor, MONITORS)
    choice("trainer.strategy", trainer.strategy, STRATEGIES)
    choice("trainer.precision", trainer.precision, PRECISIONS)
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
        if not is_number(weight) or not math.isfinite(weight) or weight <= 0:
            raise ConfigError("trainer.class_weight", weights, f"class {label}: {allowed}")
