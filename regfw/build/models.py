"""Keras models built from the `model` config group and the data's declared shape.

Layers get explicit names (`dense`, `dense_1`, ..., `conv2d`, ..., `lstm`, ..., `output`), so weight
paths are the same in every run and selectors can rely on them. A recurrent layer's weights live in
its cell: `lstm/lstm_cell/kernel`, `lstm/lstm_cell/recurrent_kernel`, `gru/gru_cell/...`,
`simple_rnn/simple_rnn_cell/...`. A `keras.applications` model keeps Keras's own layer names
(`Conv1/kernel`, `block_1_expand/kernel`, ... for MobileNetV2).

A model node with `_target_` is your own: Hydra's `instantiate` calls it with the node's other keys
plus `input_shape` and `num_classes`, and it returns the `keras.Model` (its output must be what the
data needs: one unit for binary labels or regression, `num_classes` units for classes).
"""

from __future__ import annotations

import keras
from omegaconf import DictConfig, OmegaConf

from regfw.build.plugins import importable_from_working_directory
from regfw.config.options import POOLINGS, RNN_CELLS
from regfw.errors import ConfigError
from regfw.registry import Registry, did_you_mean

BUILDERS: Registry = Registry("model")


def _numbered(prefix: str, index: int) -> str:
    return prefix if index == 0 else f"{prefix}_{index}"


def output_layer(num_classes: int) -> keras.layers.Layer:
    """One sigmoid unit for binary labels, softmax over classes, one linear unit for regression."""
    if num_classes == 0:
        return keras.layers.Dense(1, name="output")
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="output")
    return keras.layers.Dense(num_classes, activation="softmax", name="output")


@BUILDERS.register("mlp")
def _mlp(cfg: DictConfig, inputs: keras.KerasTensor) -> keras.KerasTensor:
    x = keras.layers.Flatten(name="flatten")(inputs) if len(inputs.shape) > 2 else inputs
    for i, units in enumerate(cfg.units):
        if cfg.batch_norm:  # Dense -> BatchNormalization -> activation; the norm's beta is the bias
            x = keras.layers.Dense(units, use_bias=False, name=_numbered("dense", i))(x)
            x = keras.layers.BatchNormalization(name=_numbered("batch_normalization", i))(x)
            x = keras.layers.Activation(cfg.activation, name=_numbered("activation", i))(x)
        else:
            x = keras.layers.Dense(units, activation=cfg.activation, name=_numbered("dense", i))(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=_numbered("dropout", i))(x)
    return x


@BUILDERS.register("cnn")
def _cnn(cfg: DictConfig, inputs: keras.KerasTensor) -> keras.KerasTensor:
    x = inputs
    for i, filters in enumerate(cfg.filters):
        x = keras.layers.Conv2D(
            filters,
            cfg.kernel_size,
            padding="same",
            activation=cfg.activation,
            name=_numbered("conv2d", i),
        )(x)
        if POOLINGS[cfg.pooling] and min(x.shape[1:3]) >= 2:
            name = _numbered(f"{cfg.pooling}_pooling2d", i)
            x = getattr(keras.layers, POOLINGS[cfg.pooling])(2, name=name)(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if cfg.dense_units:
        x = keras.layers.Dense(cfg.dense_units, activation=cfg.activation, name="dense")(x)
    return x


@BUILDERS.register("rnn")
def _rnn(cfg: DictConfig, inputs: keras.KerasTensor) -> keras.KerasTensor:
    layer_name, prefix = RNN_CELLS[cfg.cell]
    layer = getattr(keras.layers, layer_name)
    x = inputs
    for i, units in enumerate(cfg.units):
        last = i == len(cfg.units) - 1
        x = layer(
            units, activation=cfg.activation, return_sequences=not last, name=_numbered(prefix, i)
        )(x)
    return x


def application_names() -> list[str]:
    """The model constructors in `keras.applications` (ResNet50, MobileNetV2, ...)."""
    return [name for name in dir(keras.applications) if name[:1].isupper()]


@BUILDERS.register("application")
def _application(cfg: DictConfig, inputs: keras.KerasTensor) -> keras.KerasTensor:
    names = application_names()
    if cfg.architecture not in names:
        allowed = (
            f"expected a keras.applications model.{did_you_mean(cfg.architecture, names)} "
            f"Available: {', '.join(names)}"
        )
        raise ConfigError("model.architecture", cfg.architecture, allowed)
    kwargs = OmegaConf.to_container(cfg.kwargs, resolve=True) if cfg.kwargs else {}
    try:
        base = getattr(keras.applications, cfg.architecture)(
            include_top=False,
            weights=None,
            input_tensor=inputs,
            input_shape=inputs.shape[1:],  # with input_tensor alone, Keras skips the size check
            pooling=cfg.pooling,
            **kwargs,
        )
    except (TypeError, ValueError) as error:
        allowed = (
            f"cannot build it with model.kwargs={kwargs} on data.input_shape="
            f"{list(inputs.shape[1:])}: {error}"
        )
        raise ConfigError("model.architecture", cfg.architecture, allowed) from None
    return base.output


def build(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Builds an uncompiled model: a registered builder's, or your own (`_target_`).

    Args:
        cfg: The `model` config group.
        input_shape: Shape of one sample.
        num_classes: Number of classes (2: one sigmoid unit; 0: regression, one linear unit).

    Raises:
        ConfigError: If `model=application` names no keras.applications model, that model
            cannot be built on `input_shape` (most need images of at least 32x32), or your
            model cannot be built or has the wrong output.
    """
    if "_target_" in cfg:
        return _own_model(cfg, tuple(input_shape), num_classes)
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    features = BUILDERS.lookup(cfg.name)(cfg, inputs)
    return keras.Model(inputs, output_layer(num_classes)(features), name=cfg.name)


def _own_model(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    from hydra.utils import instantiate

    importable_from_working_directory()
    try:
        model = instantiate(cfg, input_shape=input_shape, num_classes=num_classes)
    except Exception as error:  # the user's code: its error, in one line
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        allowed = f"could not build it: {reason}"
        raise ConfigError("model._target_", cfg["_target_"], allowed) from None
    expected = 1 if num_classes in (0, 2) else num_classes
    if not isinstance(model, keras.Model) or model.output_shape[-1] != expected:
        shape = getattr(model, "output_shape", type(model).__name__)
        raise ConfigError(
            "model._target_", cfg["_target_"], f"expected a keras.Model with {expected} output "
            f"unit(s) for data.num_classes={num_classes}, got {shape}",
        )  # fmt: skip
    return model
