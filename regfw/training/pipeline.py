"""The input pipeline: array data to batches, in a seeded order that every backend shares.

Training batches follow a seeded permutation per epoch, drawn by NumPy from `(seed, epoch)`
(`epoch_order`). Unlike `Dataset.shuffle`, whose order depends on how many times the dataset was
iterated before, this gives the same batches whatever iterates the dataset: Keras peeks at one
batch first under tf.distribute, so a stateful shuffle would give a mirrored run other batches than
a one-device run. Being NumPy's, the order is the same on both backends without TensorFlow, which
a JAX run does not import. Class weights are not applied here: given a dataset,
`model.fit(class_weight=...)` maps them onto it as sample weights of the data loss (penalties are
never weighted).

Under tf.distribute `batch_size` is the global batch: each replica gets its share, and multi-worker
runs shard the batches between workers.

On TensorFlow the batches come from `tf.data` (no Python work per batch). On JAX, where Keras
would turn every `tf.data` batch into NumPy and then into a JAX array (about 2 ms a batch), they
come from `EpochBatches`, a `keras.utils.PyDataset` that gathers the same samples, in the same
order, from the NumPy arrays; class weights become the batches' sample weights there.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import keras
import numpy as np

if TYPE_CHECKING:
    import tensorflow as tf


def _options() -> tf.data.Options:
    """Shards a multi-worker run's batches between the workers (each gets whole batches)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return options


def shuffled_batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, first_epoch: int = 0
) -> tuple[tf.data.Dataset, int]:
    """Returns endless training batches (a `tf.data` pipeline) and the number of steps per epoch.

    Epoch `e` visits every sample once, in the order `epoch_order(n, seed, e)`; its last batch may
    be smaller. The arrays are held as tensors and each batch is one gather, so nothing is re-read
    or re-converted per epoch (what `cache()` gives a pipeline that reads).

    Args:
        x: Features, one sample per row.
        y: Labels.
        batch_size: Samples per step.
        seed: Seed of the per-epoch permutations.
        first_epoch: The epoch the batches start at (a resumed run's next epoch).
    """
    import tensorflow as tf

    features, labels, n = tf.constant(x), tf.constant(y), len(x)

    def epoch(index: tf.Tensor) -> tf.data.Dataset:
        order = tf.numpy_function(
            lambda e: epoch_order(n, seed, int(e)), [index], tf.int64, stateful=False
        )
        return tf.data.Dataset.from_tensor_slices(tf.ensure_shape(order, [n])).batch(batch_size)

    dataset = (
        tf.data.Dataset.counter(start=first_epoch)
        .flat_map(epoch)
        .map(lambda rows: (tf.gather(features, rows), tf.gather(labels, rows)))
        .prefetch(tf.data.AUTOTUNE)
        .with_options(_options())
    )
    return dataset, math.ceil(len(x) / batch_size)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order epoch `epoch` visits `n` samples in: a permutation of `range(n)`, int64.

    NumPy's `Generator.permutation`, seeded with `SeedSequence([seed, epoch])`: a function of
    `(seed, epoch)` alone, whatever ran before.
    """
    return np.random.default_rng([seed, epoch]).permutation(n)


class EpochBatches(keras.utils.PyDataset):
    """The training batches of `shuffled_batches`, from NumPy arrays (the JAX input pipeline).

    Args:
        x: Features, one sample per row.
        y: Labels.
        batch_size: Samples per step.
        seed: Seed of the per-epoch permutations.
        first_epoch: The epoch the batches start at (a resumed run's next epoch).
        class_weight: Class -> weight, applied as the batches' sample weights, or None.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        seed: int,
        first_epoch: int = 0,
        class_weight: dict[int, float] | None = None,
    ) -> None:
        super().__init__()
        self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
        self.weights = None
        if class_weight is not None:
            table = np.array([class_weight[c] for c in sorted(class_weight)], dtype=np.float32)
            self.weights = table[np.asarray(y).reshape(-1).astype(np.int64)]
        self.epoch = first_epoch
        self.order = epoch_order(len(x), seed, first_epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        if self.weights is None:
            return self.x[rows], self.y[rows]
        return self.x[rows], self.y[rows], self.weights[rows]

    def set_epoch(self, epoch: int) -> None:
        """Serves epoch `epoch`'s permutation from now on."""
        if epoch != self.epoch:
            self.epoch, self.order = epoch, epoch_order(len(self.x), self.seed, epoch)


class EpochOfBatches(keras.callbacks.Callback):
    """Tells an `EpochBatches` which epoch starts.

    Keras's own `PyDataset.on_epoch_begin/on_epoch_end` cannot: Keras peeks at a batch and ends
    an "epoch" before the first one, so counting their calls is off by one. A callback's
    `on_epoch_begin(epoch)` gets the epoch number itself, before the epoch's batches are read.
    """

    def __init__(self, batches: EpochBatches) -> None:
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.batches.set_epoch(epoch)


def ordered_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Returns the batches of `(x, y)` in order (validation data), cached after the first pass."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((x, y)).cache().batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(_options())
