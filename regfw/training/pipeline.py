"""The input pipeline: array data to `tf.data` batches, with no Python work per batch.

Training batches follow a seeded permutation per epoch, drawn with a stateless shuffle from
`(seed, epoch)`. Unlike `Dataset.shuffle`, whose order depends on how many times the dataset was
iterated before, this gives the same batches whatever iterates the dataset: Keras peeks at one
batch first under tf.distribute, so a stateful shuffle would give a mirrored run other batches than
a one-device run. Class weights are not applied here: given a dataset, `model.fit(class_weight=...)`
maps them onto it as sample weights of the data loss (penalties are never weighted).

Under tf.distribute `batch_size` is the global batch: each replica gets its share, and multi-worker
runs shard the batches between workers.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

_OPTIONS = tf.data.Options()
_OPTIONS.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA


def shuffled_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, first_epoch: int = 0
) -> tuple[tf.data.Dataset, int]:
    """Returns endless training batches and the number of steps per epoch.

    Epoch `e` visits every sample once, in the order `stateless_shuffle(range(n), (seed, e))`;
    its last batch may be smaller. The arrays are held as tensors and each batch is one gather, so
    nothing is re-read or re-converted per epoch (what `cache()` gives a pipeline that reads).

    Args:
        x: Features, one sample per row.
        y: Labels.
        batch_size: Samples per step.
        seed: Seed of the per-epoch permutations.
        first_epoch: The epoch the batches start at (a resumed run's next epoch).
    """
    features, labels = tf.constant(x), tf.constant(y)

    def epoch(index: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(x), dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), index])
        )
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    dataset = (
        tf.data.Dataset.counter(start=first_epoch)
        .flat_map(epoch)
        .map(lambda rows: (tf.gather(features, rows), tf.gather(labels, rows)))
        .prefetch(tf.data.AUTOTUNE)
        .with_options(_OPTIONS)
    )
    return dataset, math.ceil(len(x) / batch_size)


def ordered_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Returns the batches of `(x, y)` in order (validation data), cached after the first pass."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).cache().batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(_OPTIONS)
