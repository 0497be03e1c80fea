"""Keras models built from the `model` config group and the data's declared shape.

Layers get explicit names (`dense`, `dense_1`, ..., `conv2d`, ..., `output`), so weight paths such
as `dense/kernel` are the same in every run and selectors can rely on them.
"""

from __future__ import annotations

import keras
from omegaconf import DictConfig

from regfw.registry import Registry

BUILDERS: Registry = Registry("model")


def _numbered(prefix: str, index: int) -> str:
    return prefix if index == 0 else f"{prefix}_{index}"


def output_layer(num_classes: int) -> keras.layers.Layer:
    """A sigmoid unit for binary labels, a softmax over classes otherwise."""
    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="output")
    return keras.layers.Dense(num_classes, activation="softmax", name="output")


@BUILDERS.register("mlp")
def _mlp(cfg: DictConfig, inputs: keras.KerasTensor) -> keras.KerasTensor:
    x = keras.layers.Flatten(name="flatten")(inputs) if len(inputs.shape) > 2 else inputs
    for i, units in enumerate(cfg.units):
        x = keras.layers.Dense(units, activation=cfg.activation, name=_numbered("dense", i))(x)
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
        if min(x.shape[1:3]) >= 2:
            x = keras.layers.MaxPooling2D(2, name=_numbered("max_pooling2d", i))(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if cfg.dense_units:
        x = keras.layers.Dense(cfg.dense_units, activation=cfg.activation, name="dense")(x)
    return x


def build(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int) -> keras.Model:
    """Builds an uncompiled functional model.

    Args:
        cfg: The `model` config group.
        input_shape: Shape of one sample.
        num_classes: Number of classes (2: one sigmoid unit).
    """
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    features = BUILDERS.lookup(cfg.name)(cfg, inputs)
    return keras.Model(inputs, output_layer(num_classes)(features), name=cfg.name)
