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
import functools
from collections.abc import Iterator
from typing import Any

import keras
import tensorflow as tf
from omegaconf import DictConfig


def enable_memory_growth() -> None:
    """Lets TensorFlow take GPU memory as needed instead of all of it (no-op without GPUs).

    Must run before the first GPU use; after that the setting is fixed for the process, so a
    later call (a second run in the same process) leaves it as it is.
    """
    for gpu in tf.config.list_physical_devices("GPU"):
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)


class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy with the `reduce` that Keras 3 `fit` expects.

    Keras reduces a nested `(x, y)` batch once before training, which this strategy's own `reduce`
    refuses, and reduces scalar step results with `axis=0`, which has no axis 0. Here each tensor
    of a nest is reduced on its own, and a scalar across replicas only (keras-team/keras#20585).
    """

    def reduce(self, reduce_op: Any, value: Any, axis: Any = None) -> Any:
        parent = super()

        def reduce_one(v: Any) -> Any:
            rank = self.experimental_local_results(v)[0].shape.rank
            return parent.reduce(reduce_op, v, axis=None if rank == 0 else axis)

        return tf.nest.map_structure(reduce_one, value)


@functools.cache
def strategy(name: str) -> tf.distribute.Strategy:
    """Returns the strategy for `trainer.strategy`, created once per process.

    MultiWorkerMirroredStrategy must be created before TensorFlow runs its first operation and
    only once per process, hence the cache (a sweep in one process reuses it).

    Args:
        name: `default`, `mirrored` (every local GPU; without GPUs every logical CPU device) or
            `multi_worker`.
    """
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy(
            [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
        )
    if name == "multi_worker":
        return MultiWorkerStrategy()
    return tf.distribute.get_strategy()


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
    enable_memory_growth()
    return strategy(trainer.strategy)


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
