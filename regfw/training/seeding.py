"""Seeding a run, as `keras.utils.set_random_seed` does, without importing TensorFlow on JAX."""

from __future__ import annotations

import sys

import keras


def set_random_seed(seed: int) -> None:
    """Seeds Python, NumPy and Keras's global seed (and TensorFlow, on its backend).

    On JAX, Keras's backend-neutral code asks whether TensorFlow is installed
    (`keras.src.utils.module_utils.tensorflow.available`: `set_random_seed` then seeds it, saving
    checks for its types) and asking imports it: 6 s on a 2-core machine, for nothing a JAX run
    uses. Unless something imported TensorFlow already, Keras is told here that it is not there.
    """
    if keras.config.backend() == "jax" and "tensorflow" not in sys.modules:
        from keras.src.utils import module_utils

        lazy = getattr(module_utils, "tensorflow", None)
        if lazy is not None and getattr(lazy, "_available", False) is None:
            lazy._available = False
    keras.utils.set_random_seed(seed)
