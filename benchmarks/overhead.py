"""1. Framework overhead: regfw's training step vs the same model written by hand in Keras 3.

Three ways to train the same model on the same data with the orthogonality penalty:
- regfw: `trainer.build` + `trainer.fit` (tf.data pipeline, penalty monitor, TensorBoard);
- by hand: a Keras model with the same penalty attached as `kernel_regularizer`, `fit` on arrays;
- the article's closure: the penalty (its formula) added inside a per-sample loss function.
Time per step is the median epoch time after the first epoch, divided by the steps per epoch.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.timing import Row, epoch_timer, interleaved, regfw_step_time

SCALE = 1e-4
CASES = {
    # case: (regfw overrides, quick overrides)
    "mlp 256-512-512-1, batch 128": (
        [
            "data=synthetic",
            "data.input_shape=[256]",
            "data.n_samples=6400",
            "model.units=[512,512]",
            "trainer.batch_size=128",
        ],
        ["data=synthetic", "data.input_shape=[16]", "data.n_samples=200", "model.units=[8]"],
    ),
    "cnn 16-32-64 on digits, batch 64": (
        ["model=cnn", "data=digits", "trainer.batch_size=64"],
        ["model=cnn", "data=digits", "model.filters=[2]", "model.dense_units=4"],
    ),
}


def article_orthogonality(w: Any) -> Any:
    """The article's `orthogonality_penalty` in Keras 3 ops: `sum((W^T W - I)^2)`, W 2-D."""
    from keras import ops

    matrix = ops.reshape(w, (-1, w.shape[-1]))
    gram = ops.matmul(ops.transpose(matrix), matrix)
    return ops.sum(ops.square(gram - ops.eye(matrix.shape[1], dtype=gram.dtype)))


def hand_model(cfg: Any, *, attach: bool) -> Any:
    """The model `cfg` describes, written directly in Keras (regularizers attached by hand)."""
    import keras

    from regfw import penalties

    def regularizer() -> Any:
        return penalties.get("orthogonal", scale=SCALE) if attach else None

    layers: list[Any] = [keras.Input(tuple(cfg.data.input_shape))]
    if cfg.model.name == "cnn":
        for filters in cfg.model.filters:
            layers += [
                keras.layers.Conv2D(
                    filters,
                    cfg.model.kernel_size,
                    padding="same",
                    activation="relu",
                    kernel_regularizer=regularizer(),
                ),
                keras.layers.MaxPooling2D(2),
            ]
        layers += [keras.layers.Flatten()]
        units = [cfg.model.dense_units] if cfg.model.dense_units else []
    else:
        units = list(cfg.model.units)
    layers += [keras.layers.Dense(u, "relu", kernel_regularizer=regularizer()) for u in units]
    binary = cfg.data.num_classes == 2
    layers += [
        keras.layers.Dense(
            1 if binary else cfg.data.num_classes,
            "sigmoid" if binary else "softmax",
            kernel_regularizer=regularizer(),
        )
    ]
    return keras.Sequential(layers)


def hand_step_time(cfg: Any, *, closure: bool = False, tf_data: bool = False) -> float:
    """Seconds per step of a hand-written Keras script.

    Args:
        cfg: The config regfw would run (model, data, batch size, epochs).
        closure: Add the penalty in the article's loss closure instead of as regularizers.
        tf_data: Feed regfw's tf.data batches instead of the arrays.
    """
    import keras

    from regfw.build import data
    from regfw.training import pipeline

    keras.backend.clear_session(free_memory=True)
    keras.utils.set_random_seed(cfg.trainer.seed)
    split = data.load(cfg.data, seed=cfg.trainer.seed)
    model = hand_model(cfg, attach=not closure)
    base_loss = keras.losses.get(
        "binary_crossentropy" if cfg.data.num_classes == 2 else "sparse_categorical_crossentropy"
    )

    def closure_loss(y_true: Any, y_pred: Any) -> Any:
        penalty = sum(article_orthogonality(w) for w in model.trainable_weights if len(w.shape) > 1)
        return base_loss(y_true, y_pred) + SCALE * penalty

    model.compile(
        optimizer="adam", loss=closure_loss if closure else base_loss, metrics=["accuracy"]
    )
    batch_size = cfg.trainer.batch_size
    steps = -(-len(split.x_train) // batch_size)
    if tf_data:
        train, _ = pipeline.shuffled_batches(split.x_train, split.y_train, batch_size, seed=0)
        inputs = {
            "x": train,
            "steps_per_epoch": steps,
            "validation_data": pipeline.ordered_batches(split.x_val, split.y_val, batch_size),
        }
    else:
        inputs = {
            "x": split.x_train,
            "y": split.y_train,
            "batch_size": batch_size,
            "validation_data": (split.x_val, split.y_val),
        }
    timer = epoch_timer()
    model.fit(**inputs, epochs=cfg.trainer.epochs, callbacks=[timer], verbose=0)
    return timer.steady_epoch() / steps


# regfw with its optional per-epoch work off: the training step itself.
LEAN = ["trainer.diagnostics=false", "trainer.checkpoint_every=0"]
BASELINES = {
    "hand": ("hand-written Keras, arrays", 1.03),
    "hand_tf_data": ("hand-written Keras, same tf.data", 1.03),
    "closure": ("article's loss closure, arrays", None),
}


def run(quick: bool, repeats: int) -> list[Row]:
    """Runs the benchmark on the MLP and the CNN; returns regfw / each baseline."""
    import regfw

    rows = []
    for case, (full, small) in list(CASES.items())[: 1 if quick else None]:
        overrides = [
            *(small if quick else full),
            "penalty=orthogonal",
            f"penalty.scale={SCALE}",
            "trainer.verbose=0",
            "trainer.histograms=false",
            f"trainer.epochs={2 if quick else 6}",
        ]
        cfg = regfw.compose(overrides)
        lean = [*overrides, *LEAN]
        with tempfile.TemporaryDirectory() as tmp:
            times = interleaved(
                {
                    "regfw": partial(regfw_step_time, overrides, Path(tmp) / "default"),
                    "lean": partial(regfw_step_time, lean, Path(tmp) / "lean"),
                    "hand": partial(hand_step_time, cfg),
                    "hand_tf_data": partial(hand_step_time, cfg, tf_data=True),
                    "closure": partial(hand_step_time, cfg, closure=True),
                },
                repeats,
            )
        note = "regfw's defaults: penalty monitor, TensorBoard scalars, diagnostics, checkpoints"
        rows += [
            Row("overhead", case, "regfw", label, times["regfw"], times[key], "s/step", goal, note)
            for key, (label, goal) in BASELINES.items()
        ]
        note = "regfw without the per-epoch extras: " + " ".join(LEAN)
        rows += [
            Row(
                "overhead",
                case,
                "regfw lean",
                label,
                times["lean"],
                times[key],
                "s/step",
                goal,
                note,
            )
            for key, (label, goal) in BASELINES.items()
            if key != "closure"
        ]
    return rows
