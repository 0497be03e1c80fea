"""What the installed Keras offers by name: optimizers, callbacks, activations, losses.

Config checks run before TensorFlow is imported, so they cannot ask Keras. This module writes
what Keras offers to `keras_names.json` beside it (`python -m regfw.config.keras_names`), and
reads that file at check time; `tests/test_keras_names.py` fails when the file no longer equals
what the installed Keras offers. Nothing here is a hand-kept list of Keras's names.

- Optimizers: every `keras.optimizers.Optimizer` subclass in `keras.optimizers`, by its
  lowercase class name (the name `keras.optimizers.get` accepts: `adam`, `rmsprop`, `adamw`),
  with the keyword arguments of its constructor and their defaults; not the wrappers of other
  optimizers (LossScaleOptimizer, which `trainer.precision` sets, and MultiOptimizer).
- Callbacks: every `keras.callbacks.Callback` subclass in `keras.callbacks` that a config can
  build, by snake_case class name (`early_stopping`, `reduce_lr_on_plateau`, `terminate_on_nan`),
  with its keyword arguments. Left out: the base classes, those Keras adds to every `fit`
  (History, ProgbarLogger), TensorBoard (regfw writes its own) and those that take Python
  functions (LambdaCallback, LearningRateScheduler: use a `_target_` callback of yours).
- Activations and losses: the names `keras.activations.get` and `keras.losses.get` accept (for
  activations, those a layer can call with the tensor alone and that keep its shape: not
  `threshold`, which needs more arguments, nor `glu`, which halves the last axis).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

FILE = Path(__file__).with_name("keras_names.json")
_NOT_CONFIGURABLE_CALLBACKS = (
    "Callback", "CallbackList", "History", "ProgbarLogger", "TensorBoard", "LambdaCallback",
    "LearningRateScheduler",
)  # fmt: skip
_WRAPPER_OPTIMIZERS = ("Optimizer", "LossScaleOptimizer", "MultiOptimizer")
_NOT_ARGUMENTS = ("self", "name", "kwargs")


def snake_case(name: str) -> str:
    """`ReduceLROnPlateau` -> `reduce_lr_on_plateau`, `TerminateOnNaN` -> `terminate_on_nan`."""
    name = name.replace("NaN", "Nan")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()


def _arguments(cls: type) -> dict[str, Any]:
    """A constructor's keyword arguments and defaults (required ones as `???`, Hydra's MISSING)."""
    arguments = {}
    for parameter in inspect.signature(cls.__init__).parameters.values():
        if parameter.name in _NOT_ARGUMENTS or parameter.kind in (
            parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD,
        ):  # fmt: skip
            continue
        default = parameter.default
        if default is inspect.Parameter.empty:
            default = "???"
        elif not isinstance(default, (bool, int, float, str, type(None))):
            continue  # not a value a config can give (a callable, an object)
        arguments[parameter.name] = default
    return arguments


def generate() -> dict[str, Any]:
    """Reads the names and constructor arguments off the installed Keras (imports it)."""
    import keras

    optimizers = {
        name.lower(): {"target": f"keras.optimizers.{name}", "arguments": _arguments(cls)}
        for name, cls in sorted(vars(keras.optimizers).items())
        if isinstance(cls, type)
        and issubclass(cls, keras.optimizers.Optimizer)
        and name not in _WRAPPER_OPTIMIZERS
    }
    callbacks = {
        snake_case(name): {"target": f"keras.callbacks.{name}", "arguments": _arguments(cls)}
        for name, cls in sorted(vars(keras.callbacks).items())
        if isinstance(cls, type)
        and issubclass(cls, keras.callbacks.Callback)
        and name not in _NOT_CONFIGURABLE_CALLBACKS
    }
    return {
        "keras": keras.__version__,
        "optimizers": optimizers,
        "callbacks": callbacks,
        "activations": [
            name
            for name in _gettable(keras.activations)
            if _elementwise(getattr(keras.activations, name))
        ],
        "losses": _gettable(keras.losses),
    }


def _gettable(module: Any) -> list[str]:
    """The lowercase function names in a Keras module that its `get` resolves to themselves."""
    names = []
    for name, value in sorted(vars(module).items()):
        if (
            name.startswith("_")
            or not name.islower()
            or not callable(value)
            or isinstance(value, type)
        ):
            continue
        if name in ("get", "serialize", "deserialize"):
            continue
        try:
            if module.get(name) is not None:
                names.append(name)
        except (ValueError, TypeError):
            continue
    return names


def _elementwise(function: Any) -> bool:
    """Whether an activation works as a layer's: called on the tensor alone, same shape out."""
    import numpy as np

    sample = np.linspace(-1.0, 1.0, 8, dtype="float32").reshape(2, 4)
    try:
        return tuple(function(sample).shape) == sample.shape
    except TypeError:  # it needs more arguments (threshold)
        return False


@functools.cache
def load() -> dict[str, Any]:
    """The names and arguments recorded in `keras_names.json` (no Keras import)."""
    return json.loads(FILE.read_text())


def main() -> None:
    """`python -m regfw.config.keras_names`: writes `keras_names.json` from the installed Keras."""
    FILE.write_text(json.dumps(generate(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FILE}", file=sys.stderr)


if __name__ == "__main__":
    main()
