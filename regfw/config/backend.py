"""Which Keras backend a run uses: `trainer.backend`, else `KERAS_BACKEND`, else TensorFlow.

Keras reads its backend once, when it is first imported, so regfw sets `KERAS_BACKEND` before
that; one process has one backend, so a run that asks for another backend than the one Keras was
imported with is refused. Nothing here imports Keras.
"""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import DictConfig

from regfw.errors import ConfigError

BACKENDS = ("tensorflow", "jax")


def resolve(trainer: DictConfig) -> str:
    """The backend a run asks for: `trainer.backend`, else `KERAS_BACKEND`, else tensorflow.

    Raises:
        ConfigError: If `KERAS_BACKEND` names a backend regfw does not run on.
    """
    if trainer.get("backend") is not None:
        return trainer.backend
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend not in BACKENDS:
        raise ConfigError(
            "KERAS_BACKEND", backend, f"regfw runs on {' or '.join(BACKENDS)}; set "
            "trainer.backend=tensorflow or trainer.backend=jax, or change KERAS_BACKEND",
        )  # fmt: skip
    return backend


def use(trainer: DictConfig) -> str:
    """Makes Keras use the run's backend (before Keras is imported); returns its name.

    On JAX, GPU memory is taken as needed rather than all at once
    (`XLA_PYTHON_CLIENT_PREALLOCATE=false`, unless set), as TensorFlow's memory growth does.

    Raises:
        ConfigError: If Keras is already imported in this process with another backend.
    """
    backend = resolve(trainer)
    if "keras" in sys.modules:
        import keras

        current = keras.config.backend()
        if current != backend:
            raise ConfigError(
                "trainer.backend", backend, f"Keras is already imported in this process with the "
                f"{current} backend, and one process has one backend: start a new process, or "
                f"use trainer.backend={current}",
            )  # fmt: skip
        return backend
    os.environ["KERAS_BACKEND"] = backend
    if backend == "jax":
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        # JAX says at INFO that it found no TPU library, on every machine without one.
        logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    return backend
