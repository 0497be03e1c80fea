"""Builds a Keras optimizer or callback from its config node: by Keras's name, or yours.

A node names a Keras class by its option name (`name: rmsprop`, `name: early_stopping`, as
`regfw.config.keras_names` records them), or your own class or function by `_target_` (Hydra's
`instantiate` convention; it runs your code, like `plugins`). The node's other keys are the
constructor's arguments.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from regfw.build.plugins import importable_from_working_directory
from regfw.config import keras_names
from regfw.config.options import KERAS_GROUPS
from regfw.errors import ConfigError


def keras_object(group: str, path: str, node: DictConfig) -> Any:
    """Builds the object a node describes.

    Args:
        group: `optimizer` or `callbacks`.
        path: The node's config path, for messages (`optimizer`, `callbacks.stop`).
        node: The config node.

    Raises:
        ConfigError: If the constructor refuses the arguments (Keras's reason, in one line).
    """
    from hydra.utils import instantiate

    importable_from_working_directory()
    config = OmegaConf.to_container(node, resolve=True)
    if "_target_" in config:
        key, value = f"{path}._target_", config["_target_"]
    else:
        key, value = f"{path}.name", config.pop("name")
        config["_target_"] = keras_names.load()[KERAS_GROUPS[group]][value]["target"]
    try:
        return instantiate(config)
    except Exception as error:  # Keras's (or your class's) own check of its arguments
        cause = error.__cause__ or error  # instantiate wraps the constructor's error
        reason = " ".join(f"{type(cause).__name__}: {cause}".split())
        raise ConfigError(key, value, f"could not build it: {reason}") from None
