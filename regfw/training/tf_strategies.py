"""TensorFlow's side of `regfw.training.distribute`: GPU memory and `tf.distribute` strategies.

Imported only by runs on the TensorFlow backend (a JAX run does not import TensorFlow).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any

import tensorflow as tf


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
