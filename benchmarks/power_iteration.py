"""7. Power-iteration penalties (spectral, srip): accuracy and step time of the persistent block.

Accuracy: over random Glorot-scale matrices in 11 shapes, the relative error of the estimate
against numpy's SVD, for regfw's persistent block (exact when the penalty is attached, then one
warm-started block iteration with a Rayleigh-Ritz step per step) and for the estimator it replaced
(10 power iterations of one vector from a fixed start, every step). "After 100 steps": every
entry moves by 1e-3 per step (an Adam step at its default learning rate) in a random direction,
and the block follows with its per-step iteration. Time: value and gradient of one weight in a
compiled step, persistent block / fixed start.
"""

from __future__ import annotations

import statistics
import time
from functools import partial
from typing import Any

import numpy as np

from benchmarks.timing import Row, interleaved

SHAPES = [(10, 64), (64, 1), (30, 64), (64, 64), (128, 32), (32, 128), (256, 256),
          (3, 3, 1, 16), (3, 3, 16, 32), (3, 3, 32, 64), (512, 128)]  # fmt: skip
OLD_ITERATIONS = 10


def _exact(name: str, w: np.ndarray) -> float:
    m = w.reshape(-1, w.shape[-1])
    if name == "spectral":
        return float(np.linalg.norm(m, 2) ** 2)
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    return float(np.linalg.norm(gram - np.eye(len(gram)), 2))


def _old_value(penalty: Any, w: Any) -> Any:
    """The replaced estimator: `OLD_ITERATIONS` power iterations of one vector from a fixed start.

    Kept here, as the benchmark's baseline, exactly as regfw computed it before.
    """
    from keras import ops

    apply, size = penalty.operator(w)
    start = np.random.default_rng(0).standard_normal((size, 1))
    vector = ops.convert_to_tensor(start / np.linalg.norm(start), dtype=w.dtype)
    tiny = float(np.finfo(np.float32).tiny)
    for _ in range(OLD_ITERATIONS):
        vector = apply(vector)
        vector = vector / ops.maximum(ops.max(ops.abs(vector)), tiny)
        vector = vector / ops.maximum(ops.sqrt(ops.sum(ops.square(vector))), 1.0)
    return penalty.value_at(w, ops.stop_gradient(vector))


def errors(name: str, matrices: int, steps: int) -> dict[str, list[float]]:
    """Relative errors of both estimators, at attach time and after `steps` steps."""
    import keras
    import tensorflow as tf

    from regfw import penalties

    penalty = penalties.get(name, scale=1.0)
    step = tf.function(penalty.step)  # one trace per shape
    rng = np.random.default_rng(0)
    found: dict[str, list[float]] = {k: [] for k in ("new_0", "old_0", "new_n", "old_n")}
    for i in range(matrices):
        shape = SHAPES[i % len(SHAPES)]
        fan_in, fan_out = int(np.prod(shape[:-1])), shape[-1]
        w = rng.normal(0.0, np.sqrt(2.0 / (fan_in + fan_out)), size=shape)
        state = tf.Variable(penalty.initial_state(w).astype("float32"), trainable=False)
        for when, count in (("0", 0), ("n", steps)):
            for _ in range(count):
                w = w + 1e-3 * rng.choice([-1.0, 1.0], size=shape)
                step(tf.constant(w, tf.float32), state)
            exact = _exact(name, w)
            tensor = keras.ops.convert_to_tensor(w, "float32")
            found[f"new_{when}"].append(abs(float(penalty.estimate(tensor, state)) / exact - 1))
            found[f"old_{when}"].append(abs(float(_old_value(penalty, tensor)) / exact - 1))
    return found


def _step_seconds(name: str, shape: tuple[int, ...], persistent: bool, calls: int) -> float:
    import tensorflow as tf

    from regfw import penalties

    penalty = penalties.get(name, scale=1.0)
    rng = np.random.default_rng(1)
    w = tf.Variable(rng.normal(0, 0.05, size=shape).astype("float32"))
    state = tf.Variable(penalty.initial_state(w.numpy()).astype("float32"), trainable=False)

    @tf.function
    def step() -> Any:
        with tf.GradientTape() as tape:
            value = penalty.step(w, state) if persistent else _old_value(penalty, w)
        return value, tape.gradient(value, w)

    step()[0].numpy()
    start = time.perf_counter()
    for _ in range(calls):
        value, gradient = step()
    value.numpy(), gradient.numpy()
    return (time.perf_counter() - start) / calls


def run(quick: bool, repeats: int) -> list[Row]:
    """Accuracy rows (worst and median error) and step-time rows for spectral and srip."""
    matrices, steps = (11, 5) if quick else (200, 100)
    rows = []
    for name in ("spectral", "srip"):
        found = errors(name, matrices, steps)
        for when, label in (("0", "at attach"), ("n", f"after {steps} steps")):
            for stat in (max, statistics.median):
                rows.append(
                    Row(
                        "power_iteration",
                        f"{name} {stat.__name__} relative error {label}, {matrices} matrices",
                        "persistent block",
                        f"{OLD_ITERATIONS} iterations from a fixed start",
                        stat(found[f"new_{when}"]),
                        stat(found[f"old_{when}"]),
                        "rel. error",
                    )
                )
        for shape in [(64, 16)] if quick else [(512, 512), (3, 3, 64, 128)]:
            calls = 20 if quick else 200
            measures = {
                kind: partial(_step_seconds, name, shape, kind == "new", calls)
                for kind in ("new", "old")
            }
            times = interleaved(measures, repeats)
            rows.append(
                Row(
                    "power_iteration",
                    f"{name} value and gradient, {shape}",
                    "persistent block, 1 iteration",
                    f"fixed start, {OLD_ITERATIONS} iterations",
                    times["new"],
                    times["old"],
                    "s/step",
                )
            )
    return rows
