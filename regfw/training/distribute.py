"""Where and in what precision a run computes: GPU memory, strategies, dtype policies.

`trainer.strategy` picks the strategy: `default` (one device), `mirrored` (every local GPU, or the
CPU) or `multi_worker` (MultiWorkerMirroredStrategy; the cluster comes from the `TF_CONFIG`
environment variable; TensorFlow only). On the JAX backend `mirrored` is Keras's own
`keras.distribution.DataParallel` over the local devices, and `default` one device.
`trainer.precision` picks the Keras dtype policy; under `mixed_float16` Keras wraps the optimizer in
a `LossScaleOptimizer`, whose loss scale covers the whole loss, penalties included. Penalties still
compute in float32: variables stay float32 under mixed policies, and regfw's penalties cast low-
precision weights up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import keras
from omegaconf import DictConfig


def strategy(name: str) -> Any:
    """The `tf.distribute.Strategy` for `trainer.strategy` (`regfw.training.tf_strategies`)."""
    from regfw.training import tf_strategies

    return tf_strategies.strategy(name)


def prepare(trainer: DictConfig) -> Any:
    """Sets up devices for a run; call it before anything else touches TensorFlow.

    Args:
        trainer: The `trainer` config group.

    Returns:
        The run's strategy: a `tf.distribute.Strategy` on TensorFlow; on JAX, the
        `keras.distribution` to use (None for one device).
    """
    if keras.config.backend() == "jax":
        if trainer.strategy != "mirrored":
            return None
        return keras.distribution.DataParallel(devices=keras.distribution.list_devices())
    from regfw.training import tf_strategies  # TensorFlow: not imported by a JAX run

    tf_strategies.enable_memory_growth()
    return tf_strategies.strategy(trainer.strategy)


@contextlib.contextmanager
def scope(trainer: DictConfig) -> Iterator[Any]:
    """Creates models, penalties and optimizers under the run's strategy and dtype policy.

    The global dtype policy is restored on exit: layers keep the policy they were built with, so
    the model trains in `trainer.precision` and models built later in the process are unaffected.

    Args:
        trainer: The `trainer` config group.
    """
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(trainer.precision)
    placement = prepare(trainer)
    try:
        with contextlib.nullcontext() if placement is None else placement.scope() as active:
            yield active
    finally:
        keras.config.set_dtype_policy(previous)


def fit_scope(trainer: DictConfig) -> contextlib.AbstractContextManager:
    """What training runs under: on JAX the run's distribution (data sharding), else nothing.

    A TensorFlow strategy only needs to be active while the model is built (`scope`).
    """
    placement = prepare(trainer) if keras.config.backend() == "jax" else None
    return contextlib.nullcontext() if placement is None else placement.scope()
