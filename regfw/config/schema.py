"""Checks a composed config before TensorFlow is imported: keys, types, ranges, names, pairs.

Every node of the config is checked against its option's schema (`regfw.config.options`): a key
the option does not have is refused, even one added with `+` (with a did-you-mean), and a value
must have the type of the option's default. On top come regfw's own rules: ranges, names (from
the config tree, from Keras, from regfw's registries), and what one group needs of another.
Every failure is a `ConfigError` whose message names the config key, the value given and what is
allowed, in one line: `penalty.scale=-1.0: expected a finite number >= 0`.

A node with `_target_` is your own class or function (Hydra's `instantiate` convention): its
keys are its arguments, checked when it is built. With `plugins`, names the plugins register
(models, data sets, penalties) are checked when they are built too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from regfw.config import keras_names, yaml_text
from regfw.config.backend import BACKENDS, resolve
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
from regfw.config.compose import conf_dir
from regfw.config.options import (
    KERAS_GROUPS,
    MODEL_INPUTS,
    POOLINGS,
    PRECISIONS,
    RNN_CELLS,
    STRATEGIES,
    group_options,
    option_defaults,
    run_metrics,
)
from regfw.config.terms import term_specs, validate_terms
from regfw.registry import did_you_mean

REQUIRED_GROUPS = ("model", "data", "penalty", "optimizer", "trainer")
SELECTION_KEYS = ("include", "exclude", "min_ndim")
# Arguments of a keras.applications constructor that regfw sets itself.
APPLICATION_OWN_ARGS = ("include_top", "weights", "input_tensor", "input_shape", "pooling",
                        "classes", "classifier_activation")  # fmt: skip
TARGET = "_target_"


def validate(cfg: DictConfig) -> None:
    """Checks every group of a composed config.

    Raises:
        ConfigError: For the first key or value that is not allowed.
    """
    for group in REQUIRED_GROUPS:
        if not OmegaConf.is_dict(cfg.get(group)):
            raise ConfigError(
                group, cfg.get(group), f"every run needs the {group} group; choose an option "
                f"({group}=<option>){' or penalty=none' if group == 'penalty' else ''}",
            )  # fmt: skip
    plugins = string_list("plugins", cfg.get("plugins", []),
                          "expected a list of module names or .py paths")  # fmt: skip
    _check_root_keys(cfg)
    _validate_data(cfg.data, open_names=bool(plugins))
    _validate_model(cfg.model, cfg.data, open_names=bool(plugins))
    validate_terms(cfg)
    _validate_optimizer(cfg.optimizer)
    metrics = run_metrics(cfg.data.num_classes, [name for name, _, _ in term_specs(cfg)])
    _validate_trainer(cfg.trainer, cfg.data.num_classes, metrics)
    _validate_callbacks(cfg.get("callbacks"), metrics)
    _check_schemas(cfg)  # after the rules above, whose messages say more (ranges, names)


# ------------------------------------------------------------------------------------------
# Keys and types, from each option's schema.
# ------------------------------------------------------------------------------------------


def _check_root_keys(cfg: DictConfig) -> None:
    """The top-level keys are the groups and the keys of `conf/config.yaml`."""
    root = yaml_text.read(conf_dir() / "config.yaml")  # plain data: its keys only
    keys = sorted((set(root) - {"defaults", "hydra"}) | set(REQUIRED_GROUPS))
    for key in cfg:
        if key not in keys:
            raise ConfigError(
                key, cfg[key], f"no such config key.{did_you_mean(key, keys)} Keys here: "
                f"{', '.join(keys)}",
            )  # fmt: skip


def _check_schemas(cfg: DictConfig) -> None:
    """Checks every group node and every term against its option's keys and default types."""
    nodes = [(group, group, cfg[group]) for group in ("model", "data", "optimizer", "trainer")]
    nodes += [("penalty", path, OmegaConf.select(cfg, path))
              for _, path, _ in term_specs(cfg, "penalty")]  # fmt: skip
    nodes += [("constraint", path, OmegaConf.select(cfg, path))
              for _, path, _ in term_specs(cfg, "constraint")]  # fmt: skip
    callbacks = cfg.get("callbacks") or {}
    nodes += [("callbacks", f"callbacks.{name}", node) for name, node in callbacks.items()]
    for group, path, node in nodes:
        if not OmegaConf.is_dict(node) or TARGET in node:
            continue
        option = "default" if group == "trainer" else node.get("name")
        if group == "penalty" and option not in group_options("penalty"):
            option = "custom"  # a registered penalty's own parameters are checked when built
        schema = option_defaults(group, option) if isinstance(option, str) else None
        if schema is not None:
            _check_node(path, OmegaConf.to_container(node, resolve=True), schema,
                        open_keys=group == "penalty" and option == "custom",
                        keras=group in KERAS_GROUPS)  # fmt: skip


def _check_node(path: str, node: Mapping[str, Any], schema: Mapping[str, Any],
                open_keys: bool = False, keras: bool = False) -> None:  # fmt: skip
    """Checks a node's keys and value types against its option's defaults.

    Args:
        path: The node's config path.
        node: The node, as plain containers.
        schema: The option's keys and defaults.
        open_keys: Whether keys the option does not list are allowed (a registered penalty's
            own parameters, checked when it is built).
        keras: The option is a Keras constructor's: an integer default (`min_delta=0`) does not
            make the argument an integer, so any number is taken.
    """
    for key, value in node.items():
        where = f"{path}.{key}"
        if key not in schema:
            if open_keys:
                continue
            keys = [f"{path}.{k}" for k in schema]
            raise ConfigError(
                where, value, f"no such config key.{did_you_mean(where, keys)} Keys here: "
                f"{', '.join(keys)}",
            )  # fmt: skip
        default = schema[key]
        if isinstance(default, Mapping) and isinstance(value, Mapping):
            _check_node(where, value, default)
        elif keras and is_number(default) and is_number(value):
            continue
        elif not _same_kind(default, value):
            raise ConfigError(where, value, f"expected {_kind(default)}")


def _same_kind(default: Any, value: Any) -> bool:
    """Whether `value` has the type of an option's `default` (None, `???`, `${...}`: any)."""
    if default is None or default == "???" or (isinstance(default, str) and "${" in default):
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return is_number(value)
    if isinstance(default, list):
        return isinstance(value, list) and (
            not default or all(_same_kind(default[0], item) for item in value)
        )
    return isinstance(value, type(default))


def _kind(default: Any) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, list):
        return f"a list of {_kind(default[0]).removeprefix('a ').removeprefix('an ')}s" if (
            default) else "a list"  # fmt: skip
    if isinstance(default, Mapping):
        return "a mapping"
    return "a string" if isinstance(default, str) else f"a {type(default).__name__}"


# ------------------------------------------------------------------------------------------
# regfw's rules: names, ranges and pairs.
# ------------------------------------------------------------------------------------------


def _validate_data(data: DictConfig, open_names: bool) -> None:
    if TARGET not in data and not open_names:
        choice("data.name", data.name, group_options("data"))
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
    if data.get("loss") is not None:
        choice("data.loss", data.loss, keras_names.load()["losses"])
    if data.get("name") == "file" or data.get("path") is not None:
        _validate_path(data)
    if data.get("name") == "file" and (
        not isinstance(data.label_column, str) or not data.label_column
    ):
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


def _validate_model(model: DictConfig, data: DictConfig, open_names: bool) -> None:
    if TARGET in model:
        return
    if not open_names or model.get("name") in group_options("model"):
        choice("model.name", model.name, group_options("model"))
    activations = keras_names.load()["activations"]
    if "activation" in model:
        choice("model.activation", model.activation, activations)
    for key in ("units", "filters"):
        if key in model:
            int_list(f"model.{key}", model[key], low=1)
    if "dropout" in model:
        number("model.dropout", model.dropout, low=0, high=1, high_open=True)
    if "batch_norm" in model:
        flag("model.batch_norm", model.batch_norm)
    if "kernel_size" in model:
        number("model.kernel_size", model.kernel_size, low=1, integer=True)
    if "dense_units" in model:
        number("model.dense_units", model.dense_units, low=0, integer=True)
    if "cell" in model:
        choice("model.cell", model.cell, list(RNN_CELLS))
    if model.name == "cnn":
        choice("model.pooling", model.pooling, list(POOLINGS))
    if model.name == "application":
        _validate_application(model)
    if model.name in MODEL_INPUTS:
        rank, need, example = MODEL_INPUTS[model.name]
        if len(data.input_shape) != rank:
            raise ConfigError(
                "model",
                model.name,
                f"{need}, but data={data.get('name', data.get(TARGET))} has input_shape "
                f"{list(data.input_shape)}; use "
                f"model=mlp or data such as data={example}",
            )


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


def _validate_optimizer(optimizer: DictConfig) -> None:
    if TARGET in optimizer:
        return
    choice("optimizer.name", optimizer.get("name"), group_options("optimizer"))
    if "learning_rate" in optimizer:
        number("optimizer.learning_rate", optimizer.learning_rate, low=0, low_open=True)
    if optimizer.get("weight_decay") is not None:
        number("optimizer.weight_decay", optimizer.weight_decay, low=0)
    if optimizer.get("momentum") is not None:  # 1 never forgets a gradient: it diverges
        number("optimizer.momentum", optimizer.momentum, low=0, high=1, high_open=True)
    _check_given("optimizer", optimizer)


def _check_given(path: str, node: DictConfig) -> None:
    """Every argument without a default (`???`) must be given."""
    for key, value in OmegaConf.to_container(node).items():
        if value == "???":
            raise ConfigError(f"{path}.{key}", value, f"required: give it ({path}.{key}=...)")


def _validate_trainer(trainer: DictConfig, num_classes: int, metrics: list[str]) -> None:
    number("trainer.epochs", trainer.epochs, low=1, integer=True)
    number("trainer.batch_size", trainer.batch_size, low=1, integer=True)
    number("trainer.seed", trainer.seed, low=0, high=SEED_MAX, integer=True)
    number("trainer.checkpoint_every", trainer.checkpoint_every, low=0, integer=True)
    choice("trainer.verbose", trainer.verbose, (0, 1, 2))
    for key in ("histograms", "diagnostics", "resume", "deterministic"):
        flag(f"trainer.{key}", trainer[key])
    if trainer.jit_compile is not None:
        flag("trainer.jit_compile", trainer.jit_compile)
    if trainer.get("backend") is not None:
        choice("trainer.backend", trainer.backend, BACKENDS)
    if trainer.strategy == "multi_worker" and resolve(trainer) == "jax":
        allowed = "multi_worker runs on trainer.backend=tensorflow (TF_CONFIG); on JAX use mirrored"
        raise ConfigError("trainer.strategy", trainer.strategy, allowed)
    # What the run returns to sweepers, which minimize it: one of the losses.
    choice("trainer.monitor", trainer.monitor, [m for m in metrics if m.endswith("loss")])
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


def _validate_callbacks(callbacks: Any, metrics: list[str]) -> None:
    if callbacks is None:
        return
    if not OmegaConf.is_dict(callbacks):
        allowed = "expected a mapping of name -> callback: +callbacks@callbacks.<name>=<option>"
        raise ConfigError("callbacks", callbacks, allowed)
    for name, node in callbacks.items():
        path = f"callbacks.{name}"
        if not OmegaConf.is_dict(node):
            raise ConfigError(path, node, f"expected a callback: +callbacks@{path}=<option>")
        if TARGET in node:
            continue
        choice(f"{path}.name", node.get("name"), group_options("callbacks"))
        if isinstance(node.get("monitor"), str):
            choice(f"{path}.monitor", node.monitor, metrics)
            if node.get("mode") == "auto" and node.monitor.startswith("penalty/"):
                allowed = f"Keras cannot tell whether {node.monitor} should go up or down: set "
                raise ConfigError(f"{path}.mode", "auto", f"{allowed}{path}.mode=min or max")
        _check_given(path, node)
