"""The schema of every group option: its keys, their defaults and so their types.

One source per option:

- an option in regfw's config tree (`conf/<group>/<option>.yaml`, e.g. `model/mlp`,
  `penalty/l1`, `trainer/default`) is its own schema: the keys in the file (with the files its
  `defaults` list merges in) are every key the option takes, and a given value must have the
  type of the file's default;
- Keras's optimizers and callbacks (`optimizer=rmsprop`, `+callbacks@callbacks.x=early_stopping`)
  take the keyword arguments of their constructors, as `keras_names.json` records them.

The enumerations regfw defines itself (the recurrent cells, the poolings, what a model needs of
its input, the strategies and precisions) live here too, and the code that builds from them
imports them from here. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import functools
from typing import Any

from omegaconf import OmegaConf

from regfw.config import keras_names
from regfw.config.compose import conf_dir

# Config groups whose options Keras provides (by name, or yours by `_target_`).
KERAS_GROUPS = {"optimizer": "optimizers", "callbacks": "callbacks"}

# model.cell -> (the Keras layer class, its layers' name prefix)
RNN_CELLS = {"lstm": ("LSTM", "lstm"), "gru": ("GRU", "gru"), "simple": ("SimpleRNN", "simple_rnn")}
# model.pooling (cnn) -> the Keras pooling layer class, or None
POOLINGS = {"max": "MaxPooling2D", "average": "AveragePooling2D", "none": None}
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
STRATEGIES = ("default", "mirrored", "multi_worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def group_options(group: str) -> list[str]:
    """The option names of a config group: its YAML files, or what Keras offers."""
    if group in KERAS_GROUPS:
        return sorted(keras_names.load()[KERAS_GROUPS[group]])
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


@functools.cache
def option_defaults(group: str, name: str) -> dict[str, Any] | None:
    """The keys of an option with their defaults, or None if regfw has no schema for it.

    Args:
        group: The config group (`model`, `penalty`, `optimizer`, ...).
        name: The option (`mlp`, `l1`, `rmsprop`, ...).
    """
    if group in KERAS_GROUPS:
        entry = keras_names.load()[KERAS_GROUPS[group]].get(name)
        return None if entry is None else {"name": name, **entry["arguments"]}
    path = conf_dir() / group / f"{name}.yaml"
    return _load_option(path, group) if path.is_file() else None


def _load_option(path: Any, group: str) -> dict[str, Any] | None:
    """An option file with the files its `defaults` list merges into it (`/group/x@_here_`)."""
    node = OmegaConf.load(path)
    defaults = list(node.pop("defaults", []))
    if "_self_" not in defaults:
        defaults.append("_self_")
    merged = OmegaConf.create()
    for entry in defaults:
        if entry == "_self_":
            merged = OmegaConf.merge(merged, node)
        elif isinstance(entry, str) and entry.startswith("/") and entry.endswith("@_here_"):
            merged = OmegaConf.merge(merged, OmegaConf.load(conf_dir() / f"{entry[1:-7]}.yaml"))
        else:
            return None  # a defaults list this reader does not follow: no schema
    # Resolved in place, so that `${data.timesteps}` gives the default its type; a reference
    # outside the group stays a string, which `schema` takes as "any type".
    try:
        return OmegaConf.to_container(OmegaConf.create({group: merged}), resolve=True)[group]
    except Exception:  # an interpolation into another group
        return OmegaConf.to_container(merged)


def run_metrics(num_classes: int, terms: list[str]) -> list[str]:
    """The names a run logs per epoch, as `trainer.monitor` and callbacks' `monitor` name them."""
    base = ["loss", "data_loss", "mae" if num_classes == 0 else "accuracy"]
    return [*base, *(f"val_{name}" for name in base), "penalty/total",
            *(f"penalty/{term}" for term in terms)]  # fmt: skip
